'use strict';
// The declarations in lib/ffi.js match include/boxlite.h: every function exists there with the
// same argument count and return kind, and every constant has the header's value.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { DECLS, C } = require('../lib/ffi');
const { REPO } = require('./helpers');

function headerFunctions(text) {
  const fns = new Map();
  for (const m of text.matchAll(/^([A-Za-z_][\w ]*?\**)\s*(boxlite_\w+)\(([^)]*)\);$/gm)) {
    const args = m[3].trim() === 'void' ? 0 : m[3].split(',').length;
    fns.set(m[2], { ret: m[1].replace(/\s+/g, ' ').trim(), args });
  }
  return fns;
}

function ours(decl) {
  const m = decl.match(/^(.*?)\s*(boxlite_\w+)\((.*)\)$/);
  return { name: m[2], ret: m[1].trim(), args: m[3].trim() === 'void' ? 0 : m[3].split(',').length };
}

function mismatches(header, decls) {
  const fns = headerFunctions(header);
  const wrong = [];
  for (const d of decls.map(ours)) {
    const h = fns.get(d.name);
    if (!h) wrong.push(`${d.name}: not in the header`);
    else if (h.args !== d.args) wrong.push(`${d.name}: ${d.args} arguments, the header has ${h.args}`);
    else if (h.ret.endsWith('*') !== d.ret.endsWith('*')) wrong.push(`${d.name}: returns ${d.ret}, the header ${h.ret}`);
  }
  for (const [name, value] of Object.entries(C)) {
    const m = header.match(new RegExp(`^#define ${name} (\\d+)$`, 'm'));
    if (!m) wrong.push(`${name}: not in the header`);
    else if (Number(m[1]) !== value) wrong.push(`${name}: ${value}, the header has ${m[1]}`);
  }
  return wrong;
}

const header = fs.readFileSync(path.join(REPO, 'include/boxlite.h'), 'utf8');

test('the declarations match include/boxlite.h', () => {
  assert.ok(headerFunctions(header).size > 80);
  assert.deepEqual(mismatches(header, DECLS), []);
});

test('the check catches a missing function, a changed argument count, a changed constant', () => {
  const renamed = header.replace('boxlite_execution_kill(', 'boxlite_execution_kill2(');
  assert.match(mismatches(renamed, DECLS).join('\n'), /boxlite_execution_kill: not in the header/);
  const moreArgs = header.replace('boxlite_execution_kill(const boxlite_execution_t *execution)', 'boxlite_execution_kill(const boxlite_execution_t *execution, int x)');
  assert.match(mismatches(moreArgs, DECLS).join('\n'), /boxlite_execution_kill: 1 arguments, the header has 2/);
  const changed = header.replace('#define BOXLITE_ERROR_NOT_FOUND 2', '#define BOXLITE_ERROR_NOT_FOUND 22');
  assert.match(mismatches(changed, DECLS).join('\n'), /BOXLITE_ERROR_NOT_FOUND: 2, the header has 22/);
});
