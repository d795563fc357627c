'use strict';
// The scenarios of bindings/SCENARIOS.md (ids in the test names), with real VMs.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const v8 = require('node:v8');
const vm = require('node:vm');
const { execFileSync } = require('node:child_process');

const boxlite = require('..');
const { ENGINE, rootfs, freshHome, ourShims, openFds, settle, sleep } = require('./helpers');

const C = boxlite.constants;
const PACKAGE_DIR = path.resolve(__dirname, '..');

async function openBox(t, options = {}) {
  const runtime = await boxlite.Runtime.open({ home: freshHome(t), engine: ENGINE });
  t.after(() => runtime.close());
  const box = await runtime.createBox({ rootDisk: rootfs(), rootDiskReadOnly: true, ...options });
  t.after(() => box.close());
  return { runtime, box };
}

// S1 -------------------------------------------------------------------------------------
test('S1 open / close a runtime', async (t) => {
  const home = freshHome(t);
  const runtime = await boxlite.Runtime.open({ home, engine: ENGINE });
  assert.equal(fs.realpathSync(runtime.home), fs.realpathSync(home));
  assert.equal(boxlite.version(), `${C.BOXLITE_VERSION_MAJOR}.${C.BOXLITE_VERSION_MINOR}.${C.BOXLITE_VERSION_PATCH}`);
  // The home is locked while open: a second runtime on it is refused with its own error.
  await assert.rejects(boxlite.Runtime.open({ home, engine: ENGINE }), (e) => {
    assert.ok(e instanceof boxlite.HomeLocked && e instanceof boxlite.BoxliteError, String(e));
    assert.equal(e.code, C.BOXLITE_ERROR_HOME_LOCKED);
    assert.match(e.message, new RegExp(`\\b${process.pid}\\b`));
    return true;
  });
  await runtime.close();
  await runtime.close(); // twice: nothing
  await assert.rejects(() => runtime.getBox('x'), boxlite.InvalidState);
  const again = await boxlite.Runtime.open({ home, engine: ENGINE }); // the lock went with the close
  await again[Symbol.asyncDispose]();
  assert.ok(again.closed);
});

// S2 -------------------------------------------------------------------------------------
test('S2 create, exec, output and exit code', async (t) => {
  const { box } = await openBox(t);
  const result = await box.exec(['sh', '-c', 'echo out; echo err >&2; exit 3']);
  assert.deepEqual([result.stdout.toString(), result.stderr.toString(), result.exitCode, result.timedOut], ['out\n', 'err\n', 3, false]);
  assert.equal(result.ok, false);
  await assert.rejects(box.exec(['sh', '-c', 'exit 4'], { check: true }), (e) => {
    assert.ok(e instanceof boxlite.ProcessExitError);
    assert.equal(e.result.exitCode, 4);
    return true;
  });
  const env = await box.exec(['sh', '-c', 'echo "$GREETING $(pwd) $(id -u)"'], { env: { GREETING: 'hi' }, cwd: '/tmp', user: 'tester' });
  assert.equal(env.stdout.toString(), 'hi /tmp 1000\n');
  await assert.rejects(box.exec(['no-such-program']), (e) => {
    assert.ok(e instanceof boxlite.ProgramNotFound, String(e));
    assert.equal(e.code, 9);
    assert.match(e.message, /no-such-program/);
    return true;
  });
});

// S3 -------------------------------------------------------------------------------------
test('S3 a 64 MiB stream with a hash', async (t) => {
  const { box } = await openBox(t);
  const size = 64 * 1024 * 1024;
  const line = Buffer.from('boxlite stream test line\n');
  const expected = crypto.createHash('sha256').update(Buffer.alloc(size, line)).digest('hex');
  const digest = crypto.createHash('sha256');
  let total = 0;
  const stderr = [];
  const execution = await box.stream(['sh', '-c', `yes 'boxlite stream test line' | head -c ${size}; echo done >&2`]);
  for await (const chunk of execution) {
    assert.ok(Buffer.isBuffer(chunk.data));
    if (chunk.stream === 'stdout') { digest.update(chunk.data); total += chunk.data.length; } else {
      assert.equal(chunk.stream, 'stderr');
      stderr.push(chunk.data);
    }
  }
  assert.equal(total, size);
  assert.equal(digest.digest('hex'), expected);
  assert.equal(Buffer.concat(stderr).toString(), 'done\n');
  assert.equal((await execution.wait()).exitCode, 0);
  await execution.close();
});

// S4 -------------------------------------------------------------------------------------
test('S4 stdin', async (t) => {
  const { box } = await openBox(t);
  const nul = Buffer.from('hello\0world');
  assert.deepEqual((await box.exec(['cat'], { input: nul })).stdout, nul);
  const data = crypto.randomBytes(1024 * 1024);
  const execution = await box.startExec(['sha256sum']);
  for (let i = 0; i < data.length; i += 64 * 1024) await execution.writeStdin(data.subarray(i, i + 64 * 1024));
  await execution.closeStdin();
  const result = await execution.wait({ timeout: 60 });
  await execution.close();
  assert.equal(result.stdout.toString().split(/\s/)[0], crypto.createHash('sha256').update(data).digest('hex'));
  const streamed = await box.stream(['tr', 'a-z', 'A-Z'], { input: 'shout' });
  const out = [];
  for await (const c of streamed) if (c.stream === 'stdout') out.push(c.data);
  assert.equal(Buffer.concat(out).toString(), 'SHOUT');
  await streamed.close();
});

// S5 -------------------------------------------------------------------------------------
test('S5 a timeout that kills the process group and keeps partial output', async (t) => {
  const { box } = await openBox(t);
  const script = 'echo started; sleep 1000 & echo child >&2; sleep 1000';
  const t0 = Date.now();
  const result = await box.exec(['sh', '-c', script], { timeout: 1 });
  assert.ok(Date.now() - t0 < 10000);
  assert.deepEqual([result.timedOut, result.signal, result.exitCode], [true, 9, -1]);
  assert.equal(result.stdout.toString(), 'started\n');
  assert.equal(result.stderr.toString(), 'child\n');
  // the background child went with its group
  assert.ok(!(await box.exec(['ps'])).stdout.toString().includes('sleep 1000'));
  await assert.rejects(box.exec(['sh', '-c', script], { timeout: 0.5, check: true }), (e) => {
    assert.ok(e instanceof boxlite.ExecTimeout, String(e));
    assert.equal(e.stdout.toString(), 'started\n');
    assert.ok(e.result && e.result.timedOut);
    return true;
  });
  // a bounded wait on a background execution: ExecTimeout with the output so far, still running
  const execution = await box.startExec(['sh', '-c', 'echo partial; sleep 1000']);
  await assert.rejects(execution.wait({ timeout: 1 }), (e) => {
    assert.ok(e instanceof boxlite.ExecTimeout, String(e));
    assert.equal(e.stdout.toString(), 'partial\n');
    assert.equal(e.result, null);
    return true;
  });
  assert.ok(execution.running);
  await execution.kill();
  assert.equal((await execution.wait({ timeout: 10 })).signal, 9);
  await execution.close();
  const sleeper = await box.startExec(['sleep', '1000']);
  await sleeper.signal('SIGTERM');
  assert.equal((await sleeper.wait({ timeout: 10 })).signal, 15);
  await sleeper.close();
});

// S6 -------------------------------------------------------------------------------------
test('S6 a bad option: its error type and message', async (t) => {
  const runtime = await boxlite.Runtime.open({ home: freshHome(t), engine: ENGINE });
  t.after(() => runtime.close());
  const disk = rootfs();
  await assert.rejects(runtime.createBox({ rootDisk: disk, rootDiskReadOnly: true, cpus: 0 }), (e) => {
    assert.ok(e instanceof boxlite.InvalidArgument && e instanceof boxlite.BoxliteError, String(e));
    assert.equal(e.code, C.BOXLITE_ERROR_INVALID_ARGUMENT);
    assert.match(e.message.toLowerCase(), /cpu/);
    return true;
  });
  await assert.rejects(runtime.createBox({ rootDisk: disk, network: 'allow_list', allow: ['10.0.0.1/8'] }), (e) => {
    assert.ok(e instanceof boxlite.InvalidArgument, String(e));
    assert.ok(e.message.includes('10.0.0.1/8'), e.message);
    return true;
  });
  await assert.rejects(runtime.createBox({ rootDisk: '/nonexistent/disk.ext4' }), (e) => {
    assert.ok(e instanceof boxlite.InvalidArgument, String(e));
    assert.ok(e.message.includes('/nonexistent/disk.ext4'), e.message);
    return true;
  });
  await assert.rejects(runtime.createBox({ rootDisk: disk, network: 'sideways' }), boxlite.InvalidArgument);
  await assert.rejects(runtime.getBox('no-such-box'), (e) => {
    assert.ok(e instanceof boxlite.NotFound, String(e));
    assert.equal(e.code, C.BOXLITE_ERROR_NOT_FOUND);
    assert.ok(e.message.includes('no-such-box'), e.message);
    return true;
  });
});

// S7 -------------------------------------------------------------------------------------
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');

async function everything(home) {
  const runtime = await boxlite.Runtime.open({ home, engine: ENGINE });
  const box = await runtime.createBox({ rootDisk: rootfs(), rootDiskReadOnly: true });
  const execution = await box.startExec(['cat']);
  await execution.writeStdin('x');
  return { runtime, box, execution };
}

for (const order of ['runtime-box-execution', 'execution-box-runtime', 'box-runtime-execution', 'gc']) {
  test(`S7 objects dropped in any order and by the GC: ${order}`, async (t) => {
    const home = freshHome(t);
    {
      // Warm up what the library keeps for the whole process (its threads and their fds).
      const rt = await boxlite.Runtime.open({ home, engine: ENGINE });
      const b = await rt.createBox({ rootDisk: rootfs(), rootDiskReadOnly: true });
      await b.exec(['true']);
      await b.close();
      await rt.close();
    }
    assert.ok(await settle(() => ourShims().length === 0));
    const fds = openFds();
    if (order === 'gc') {
      await (async () => {
        const objects = await everything(home);
        assert.equal(ourShims().length, 1);
        return objects.execution.id;
      })();
      for (let i = 0; i < 5; i++) { gc(); await sleep(20); }
    } else {
      const objects = await everything(home);
      assert.equal(ourShims().length, 1);
      for (const name of order.split('-')) await objects[name].close();
    }
    assert.ok(await settle(() => ourShims().length === 0, 15), `helper processes left: ${ourShims()}`);
    assert.ok(await settle(() => openFds() <= fds, 10), `${openFds()} fds open, ${fds} before`);
    // The home is free again (every handle really went).
    await (await boxlite.Runtime.open({ home, engine: ENGINE })).close();
  });
}

// S8 -------------------------------------------------------------------------------------
test('S8 two boxes at once', async (t) => {
  const runtime = await boxlite.Runtime.open({ home: freshHome(t), engine: ENGINE });
  t.after(() => runtime.close());
  const one = await runtime.createBox({ rootDisk: rootfs(), rootDiskReadOnly: true, name: 'one' });
  t.after(() => one.close());
  const two = await runtime.createBox({ rootDisk: rootfs(), rootDiskReadOnly: true, name: 'two' });
  t.after(() => two.close());
  await Promise.all([one.start(), two.start()]);
  assert.equal(ourShims().length, 2);
  // Both boxes hold a running process at the same moment: each waits on its stdin and is
  // still running once both have started (no timing asserted).
  const waiting = await Promise.all([one, two].map((b) => b.startExec(['sh', '-c', `read word; echo ${b.name} $word`])));
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.ok(waiting.every((e) => e.running), 'a box\'s process did not wait on its stdin');
  for (const e of waiting) {
    await e.writeStdin('go\n');
    await e.closeStdin();
  }
  const results = await Promise.all(waiting.map((e) => e.wait()));
  assert.deepEqual(results.map((r) => r.stdout.toString()), ['one go\n', 'two go\n']);
  const listed = await runtime.listBoxes();
  assert.deepEqual(listed.map((b) => b.name), ['one', 'two']);
  for (const b of listed) await b.close();
});

// S9 -------------------------------------------------------------------------------------
test('S9 a box found again by name from a second process', async (t) => {
  const home = freshHome(t);
  const script = `
    const boxlite = require(${JSON.stringify(PACKAGE_DIR)});
    (async () => {
      const rt = await boxlite.Runtime.open({ home: ${JSON.stringify(home)}, engine: ${JSON.stringify(ENGINE)} });
      const box = await rt.createBox({ rootDisk: ${JSON.stringify(rootfs())}, rootDiskReadOnly: true, name: 'keeper' });
      const r = await box.exec(['echo', 'first']);
      console.log(box.id, r.stdout.toString().trim());
      await box.close();
      await rt.close();
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
  const [id, word] = out.trim().split(/\s+/);
  assert.equal(word, 'first');
  const rt = await boxlite.Runtime.open({ home, engine: ENGINE });
  t.after(() => rt.close());
  const box = await rt.getBox('keeper');
  t.after(() => box.close());
  assert.deepEqual([box.id, box.name], [id, 'keeper']);
  assert.equal(box.status, 'stopped');
  assert.equal((await box.exec(['echo', 'again'])).stdout.toString(), 'again\n');
  const byId = await rt.getBox(id);
  assert.equal(byId.name, 'keeper');
  await byId.close();
});

// S10 ------------------------------------------------------------------------------------
test('S10 a VM killed mid-exec gives an error within a few seconds, not a hang', async (t) => {
  const { runtime, box } = await openBox(t);
  const execution = await box.startExec(['sh', '-c', 'echo before; sleep 1000']);
  const shimPid = Number(fs.readFileSync(path.join(runtime.home, 'boxes', box.id, 'shim.pid'), 'utf8').trim());
  await sleep(300);
  const t0 = Date.now();
  process.kill(shimPid, 'SIGKILL');
  await assert.rejects(execution.wait({ timeout: 30 }), (e) => {
    assert.ok(e instanceof boxlite.VmExited, String(e));
    assert.match(e.message, /signal 9/);
    assert.equal(e.stdout.toString(), 'before\n');
    return true;
  });
  const elapsed = Date.now() - t0;
  assert.ok(elapsed < 5000, `the error took ${elapsed} ms`);
  await execution.close();
  assert.ok(await settle(() => box.status === 'stopped', 5));
  assert.match(box.stopReason || '', /signal 9/);
});
