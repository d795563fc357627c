'use strict';
// The README's opening example runs verbatim (in a child process, against a fresh home).
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { ENGINE, rootfs, freshHome } = require('./helpers');

test('the README opening example runs verbatim', async (t) => {
  const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
  const code = readme.match(/```js\n([\s\S]*?)```/)[1];
  assert.ok(code.trim().split('\n').length <= 10, 'the example is longer than 10 lines');
  const dir = freshHome(t);
  // `require('boxlite')` resolves to this package through a node_modules link.
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(path.resolve(__dirname, '..'), path.join(dir, 'node_modules', 'boxlite'));
  fs.writeFileSync(path.join(dir, 'example.js'), code);
  const env = { ...process.env, BOXLITE_HOME: path.join(dir, 'home'), BOXLITE_ENGINE: ENGINE, BOXLITE_ROOTFS: rootfs() };
  const out = await new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(dir, 'example.js')], { env, cwd: dir, timeout: 60000 }, (err, stdout, stderr) => (
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)));
  });
  assert.equal(out, 'hello from Linux\n');
});
