// Binding overhead benchmark, Node (scripts/bench-bindings.sh): the same as exec_c.c
// through bindings/node. Prints one JSON line.
// Usage: node bench.js HOME ROOTFS [N]
'use strict';
const path = require('path');
const boxlite = require(path.join(__dirname, '..', 'node'));

const STREAM_BYTES = 64 * 1024 * 1024;

// Nearest rank (the same rule as exec_c.c).
function percentile(sorted, p) {
  const rank = Math.min(Math.max(Math.ceil((p / 100) * sorted.length - 1e-6), 1), sorted.length);
  return sorted[rank - 1];
}

async function main() {
  const [home, rootfs, count] = process.argv.slice(2);
  const n = Math.max(parseInt(count || '100', 10), 1);
  const runtime = await boxlite.Runtime.open({ home, engine: 'qemu' });
  const box = await runtime.createBox({ rootDisk: rootfs, rootDiskReadOnly: true });
  for (let i = 0; i < 5; i++) await box.exec(['true'], { check: true }); // warm up: boots the box
  const samples = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    const result = await box.exec(['true']);
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (result.exitCode !== 0) throw new Error(`true exited ${result.exitCode}`);
  }
  samples.sort((a, b) => a - b);
  let streamed = 0;
  const t0 = process.hrtime.bigint();
  const execution = await box.stream(['head', '-c', String(STREAM_BYTES), '/dev/zero']);
  for await (const { stream, data } of execution) if (stream === 'stdout') streamed += data.length;
  const streamS = Number(process.hrtime.bigint() - t0) / 1e9;
  const result = await execution.wait();
  await execution.close();
  if (result.exitCode !== 0 || streamed !== STREAM_BYTES) {
    throw new Error(`stream exited ${result.exitCode} with ${streamed} bytes`);
  }
  await box.stop();
  await box.remove({ force: true });
  await box.close();
  await runtime.close();
  const round = (x, d) => Math.round(x * 10 ** d) / 10 ** d;
  console.log(JSON.stringify({
    lang: 'node', n,
    true_p50_ms: round(percentile(samples, 50), 3),
    true_p99_ms: round(percentile(samples, 99), 3),
    stream_mb_s: round(streamed / 1e6 / streamS, 2),
  }));
}

main().catch((err) => { console.error(`bench.js: ${err.stack || err}`); process.exit(1); });
