'use strict';
// Shared by the scenario tests (bindings/SCENARIOS.md): a fresh home per test, the busybox
// test root disk, the engine (qemu unless BOXLITE_TEST_ENGINE says otherwise, as the C
// tests), and counters of this process's open fds and helper processes.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '../../..');
const ENGINE = process.env.BOXLITE_TEST_ENGINE || 'qemu';

function rootfs() {
  const p = process.env.BOXLITE_TEST_ROOTFS || path.join(REPO, 'target/guest/busybox-rootfs.ext4');
  if (!fs.existsSync(p)) throw new Error(`no test root disk at ${p}: run scripts/build-test-rootfs.sh (or set BOXLITE_TEST_ROOTFS)`);
  return p;
}

/** A fresh, short home (it holds unix sockets: 108-byte path limit), removed by the test's end. */
function freshHome(t) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'bxjs-'));
  t.after(() => fs.rmSync(home, { recursive: true, force: true }));
  return home;
}

/** Pids of boxlite-shim processes that are children of this process. */
function ourShims() {
  const pids = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try { stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8'); } catch { continue; }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (comm === 'boxlite-shim' && ppid === process.pid) pids.push(Number(entry));
  }
  return pids;
}

function openFds() { return fs.readdirSync('/proc/self/fd').length; }

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function settle(predicate, seconds = 10) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (predicate()) return true;
    await sleep(50);
  }
  return predicate();
}

module.exports = { REPO, ENGINE, rootfs, freshHome, ourShims, openFds, settle, sleep };
