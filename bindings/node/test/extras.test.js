'use strict';
// Beyond the scenario table: the JS thread is never blocked; a stream left early is killed.
const test = require('node:test');
const assert = require('node:assert/strict');
const boxlite = require('..');
const { ENGINE, rootfs, freshHome, settle } = require('./helpers');

async function openBox(t) {
  const runtime = await boxlite.Runtime.open({ home: freshHome(t), engine: ENGINE });
  t.after(() => runtime.close());
  const box = await runtime.createBox({ rootDisk: rootfs(), rootDiskReadOnly: true });
  t.after(() => box.close());
  return box;
}

test('the event loop never blocks: boot, a 1 s command, stop', async (t) => {
  const box = await openBox(t);
  let last = Date.now();
  let worst = 0;
  const ticker = setInterval(() => { const now = Date.now(); worst = Math.max(worst, now - last); last = now; }, 10);
  try {
    const result = await box.exec(['sh', '-c', 'sleep 1; echo slept']); // boots the box first
    assert.equal(result.stdout.toString(), 'slept\n');
    await box.stop();
  } finally {
    clearInterval(ticker);
  }
  assert.ok(worst < 900, `the event loop was blocked for ${worst} ms`);
  assert.equal(box.status, 'stopped');
});

test('collected output stops at outputLimit: the rest is not kept and the process is killed', async (t) => {
  const box = await openBox(t);
  const limit = 256 * 1024;
  const result = await box.exec(['yes'], { outputLimit: limit });
  assert.equal(result.stdout.length, limit);
  assert.equal(result.stdout.subarray(0, 4).toString(), 'y\ny\n');
  assert.ok(result.stdoutTruncated && !result.stderrTruncated, 'stdout is flagged truncated');
  assert.equal(result.cancelled, false, 'the limit, not the caller, ended it');
  assert.equal(result.signal, 9);
  const both = await box.exec(['sh', '-c', 'echo fits; echo also-fits >&2'], { outputLimit: limit });
  assert.ok(!both.stdoutTruncated && !both.stderrTruncated && both.ok);
  await assert.rejects(box.exec(['true'], { outputLimit: 0 }), boxlite.InvalidArgument);
});

test('a stream read slower than it is written holds a bounded queue, then delivers it all', async (t) => {
  const box = await openBox(t);
  const size = 32 * 1024 * 1024;
  const execution = await box.stream(['head', '-c', String(size), '/dev/zero']);
  // Not read for 1.5 s: the process could write it all meanwhile; the queue must stay bounded.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const queued = execution._state.chunks;
  const queuedBytes = queued.reduce((n, c) => n + c.data.length, 0);
  assert.ok(queued.length <= 8 && queuedBytes <= 8 * 1024 * 1024, `${queued.length} chunks, ${queuedBytes} bytes queued`);
  assert.ok(execution.running, 'the exit cannot come before the output it follows');
  let total = 0;
  for await (const chunk of execution) total += chunk.data.length;
  assert.equal(total, size);
  assert.equal((await execution.wait()).exitCode, 0);
  await execution.close();
});

test('a stream left early is killed and its callbacks released', async (t) => {
  const box = await openBox(t);
  const execution = await box.stream(['yes']);
  let taken = 0;
  for await (const chunk of execution) {
    assert.equal(chunk.stream, 'stdout');
    if (++taken === 3) break;
  }
  assert.ok(await settle(() => !execution.running, 10), 'the process still runs');
  await execution.close();
  assert.ok(!(await box.exec(['ps'])).stdout.toString().includes(' yes'));
});

test('a closed object refuses calls with InvalidState; unknown engine and protocol are InvalidArgument', async (t) => {
  const box = await openBox(t);
  await box.close();
  assert.throws(() => box.status, boxlite.InvalidState);
  await assert.rejects(boxlite.Runtime.open({ engine: 'warp' }), boxlite.InvalidArgument);
  const runtime = await boxlite.Runtime.open({ home: freshHome(t), engine: ENGINE });
  t.after(() => runtime.close());
  await assert.rejects(runtime.createBox({ rootDisk: rootfs(), ports: [{ guest: 80, protocol: 'sctp' }] }), boxlite.InvalidArgument);
});
