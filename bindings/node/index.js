'use strict';
// boxlite for Node: a Promise API over libboxlite (include/boxlite.h) through koffi.
//
// Threads: every C call that may block (boot, exec, stdin writes, stop, frees) runs on a
// koffi worker thread (`fn.async`), so the JS thread is never blocked while a library thread
// waits for it. The library calls the output and exit callbacks on its own threads; koffi
// queues each call to the JS thread, where it only copies the bytes into a queue.
// Handles: each object owns one C handle, freed by close() (also by Symbol.asyncDispose, and
// by a FinalizationRegistry when the object is garbage collected). A child handle keeps its
// parent alive in the library, so objects may be closed in any order.
const { lib, C, koffi } = require('./lib/ffi');
const errors = require('./lib/errors');
const { findLibrary, LibraryNotFound } = require('./lib/loader');

const { BoxliteError, ExecTimeout, ProcessExitError } = errors;

function check(err) {
  if (!err) return;
  const { fns } = lib();
  const code = fns.boxlite_error_code(err);
  const message = fns.boxlite_error_message(err) || '';
  fns.boxlite_error_free(err);
  throw errors.fromCode(code, message);
}

/** Runs a C function on a koffi worker thread; resolves to its result. */
function callAsync(name, ...args) {
  const fn = lib().fns[name];
  return new Promise((resolve, reject) => {
    fn.async(...args, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

/** As callAsync for a function returning boxlite_error_t *: throws the typed error. */
async function checkAsync(name, ...args) {
  check(await callAsync(name, ...args));
}

function closedError(what) {
  return new errors.InvalidState(C.BOXLITE_ERROR_INVALID_STATE, `the ${what} is closed`);
}

// Frees handles of objects the garbage collector took without close().
const finalizer = new FinalizationRegistry((cell) => {
  if (cell.ptr) {
    const ptr = cell.ptr;
    cell.ptr = null;
    const { fns } = lib();
    const free = () => fns[cell.free].async(ptr, () => {});
    if (cell.state && !cell.state.done) {
      // An execution still running: killed first, as close() does.
      cell.state.cancel = true;
      fns.boxlite_execution_kill.async(ptr, (err, e) => { if (e) fns.boxlite_error_free(e); free(); });
    } else {
      free();
    }
  }
});

// While an execution runs, a timer keeps the event loop alive: the library's callbacks
// arrive through koffi's queue, which does not hold the loop open by itself.
let running = 0;
let keepAlive = null;
function holdLoop(delta) {
  running += delta;
  if (running > 0 && !keepAlive) keepAlive = setInterval(() => {}, 1 << 30);
  if (running === 0 && keepAlive) { clearInterval(keepAlive); keepAlive = null; }
}

class Handle {
  constructor(ptr, free, what) {
    this._cell = { ptr, free };
    this._what = what;
    this._closing = null;
    finalizer.register(this, this._cell, this._cell);
  }
  get closed() { return this._cell.ptr === null; }
  _ptr() {
    if (!this._cell.ptr) throw closedError(this._what);
    return this._cell.ptr;
  }
  /** Frees the handle (on a worker thread). Closing twice is harmless. */
  close() {
    if (!this._closing) {
      const ptr = this._cell.ptr;
      this._cell.ptr = null;
      finalizer.unregister(this._cell);
      this._closing = ptr ? callAsync(this._cell.free, ptr).then(() => undefined) : Promise.resolve();
    }
    return this._closing;
  }
  [Symbol.asyncDispose]() { return this.close(); }
}

const ENGINES = { auto: C.BOXLITE_ENGINE_AUTO, krun: C.BOXLITE_ENGINE_KRUN, qemu: C.BOXLITE_ENGINE_QEMU };
const NETWORKS = { none: C.BOXLITE_NETWORK_NONE, outbound: C.BOXLITE_NETWORK_OUTBOUND, allow_list: C.BOXLITE_NETWORK_ALLOW_LIST };
const PROTOCOLS = { tcp: C.BOXLITE_PROTOCOL_TCP, udp: C.BOXLITE_PROTOCOL_UDP };
const STATUSES = ['configured', 'running', 'stopped', 'removed'];

function invalid(message) { return new errors.InvalidArgument(C.BOXLITE_ERROR_INVALID_ARGUMENT, message); }

function pick(table, value, what) {
  if (!Object.prototype.hasOwnProperty.call(table, value)) {
    throw invalid(`unknown ${what} ${JSON.stringify(value)}: use ${Object.keys(table).map((k) => `'${k}'`).join(', ')}`);
  }
  return table[value];
}

/** The library's version string ("0.2.0"). */
function version() { return lib().fns.boxlite_version(); }

class Runtime extends Handle {
  /**
   * Opens a runtime on its home (created if missing) and locks it.
   * options: { home?, engine?: 'auto'|'krun'|'qemu', logToHome? }
   */
  static async open(options = {}) {
    const { fns } = lib();
    const out = [null];
    check(fns.boxlite_runtime_options_new(out));
    const opts = out[0];
    try {
      if (options.home !== undefined) check(fns.boxlite_runtime_options_set_home(opts, String(options.home)));
      if (options.engine !== undefined) check(fns.boxlite_runtime_options_set_engine(opts, pick(ENGINES, options.engine, 'engine')));
      if (options.logToHome) check(fns.boxlite_runtime_options_set_log_to_home(opts, true));
      const rt = [null];
      await checkAsync('boxlite_runtime_new', rt, opts);
      return new Runtime(rt[0]);
    } finally {
      fns.boxlite_runtime_options_free(opts);
    }
  }
  constructor(ptr) { super(ptr, 'boxlite_runtime_free', 'runtime'); }
  get home() { return lib().fns.boxlite_runtime_home(this._ptr()); }

  /** Creates a box (nothing boots until start() or the first exec). */
  async createBox(options = {}) {
    const { fns } = lib();
    const runtime = this._ptr();
    const out = [null];
    check(fns.boxlite_box_options_new(out));
    const opts = out[0];
    try {
      const o = options;
      if (o.name !== undefined) check(fns.boxlite_box_options_set_name(opts, o.name));
      if (o.cpus !== undefined) check(fns.boxlite_box_options_set_cpus(opts, o.cpus));
      if (o.memoryMib !== undefined) check(fns.boxlite_box_options_set_memory_mib(opts, o.memoryMib));
      if (o.image !== undefined) check(fns.boxlite_box_options_set_image(opts, o.image));
      if (o.detached !== undefined) check(fns.boxlite_box_options_set_detached(opts, !!o.detached));
      if (o.diskSizeGib !== undefined) check(fns.boxlite_box_options_set_disk_size_gib(opts, o.diskSizeGib));
      if (o.rootDisk !== undefined) {
        check(fns.boxlite_box_options_set_root_disk(opts, String(o.rootDisk), o.rootDiskReadOnly ? C.BOXLITE_DISK_READ_ONLY : 0));
      }
      for (const v of o.volumes || []) {
        const [host, guest, ro] = Array.isArray(v) ? v : [v.hostPath, v.guestPath, v.readOnly];
        check(fns.boxlite_box_options_add_volume(opts, String(host), String(guest), ro ? C.BOXLITE_VOLUME_READ_ONLY : 0));
      }
      if (o.network !== undefined) check(fns.boxlite_box_options_set_network(opts, pick(NETWORKS, o.network, 'network mode')));
      for (const rule of o.allow || []) check(fns.boxlite_box_options_add_network_allow(opts, rule));
      if (o.allowHostLoopback !== undefined) check(fns.boxlite_box_options_set_allow_host_loopback(opts, !!o.allowHostLoopback));
      for (const p of o.ports || []) {
        const port = typeof p === 'number' ? { guest: p } : p;
        check(fns.boxlite_box_options_add_port_forward(opts, pick(PROTOCOLS, port.protocol || 'tcp', 'protocol'),
          port.hostAddr || null, port.host || 0, port.guest));
      }
      for (const dns of o.dns || []) check(fns.boxlite_box_options_add_dns_server(opts, dns));
      const box = [null];
      await checkAsync('boxlite_box_create', box, runtime, opts);
      return new Box(box[0], this);
    } finally {
      fns.boxlite_box_options_free(opts);
    }
  }

  /** Finds a box by id or name (NotFound names it). */
  async getBox(idOrName) {
    const runtime = this._ptr();
    const out = [null];
    await checkAsync('boxlite_runtime_get_box', out, runtime, String(idOrName));
    return new Box(out[0], this);
  }

  /** Every box of this home, oldest first. */
  async listBoxes() {
    const { fns } = lib();
    const runtime = this._ptr();
    const out = [null];
    await checkAsync('boxlite_runtime_list_boxes', out, runtime);
    const list = out[0];
    try {
      const len = [0];
      check(fns.boxlite_box_list_len(len, list));
      const boxes = [];
      for (let i = 0; i < len[0]; i++) {
        const b = [null];
        check(fns.boxlite_box_list_get(b, list, i));
        boxes.push(new Box(b[0], this));
      }
      return boxes;
    } finally {
      fns.boxlite_box_list_free(list);
    }
  }
}

class ExecResult {
  constructor(status, stdout, stderr, truncated = { stdout: false, stderr: false }) {
    this.exitCode = status.exit_code;
    this.signal = status.signal;
    this.timedOut = !!status.timed_out;
    // A stream past the output limit also cancels the execution: that is not the caller's.
    this.cancelled = !!status.cancelled && !truncated.stdout && !truncated.stderr;
    this.stdout = stdout;
    this.stderr = stderr;
    this.stdoutTruncated = truncated.stdout;
    this.stderrTruncated = truncated.stderr;
  }
  get ok() { return this.exitCode === 0 && !this.signal && !this.timedOut; }
}

// As the library's default for boxlite_box_run: 64 MiB per stream.
const DEFAULT_OUTPUT_LIMIT = 64 * 1024 * 1024;

function outputLimitOf(options) {
  const limit = options.outputLimit === undefined || options.outputLimit === null ? DEFAULT_OUTPUT_LIMIT : options.outputLimit;
  if (!Number.isSafeInteger(limit) || limit < 1) throw invalid(`outputLimit ${limit}: a whole number of bytes above 0`);
  return limit;
}

function argvOf(argv) {
  const list = typeof argv === 'string' ? [argv] : Array.from(argv || []);
  if (list.length === 0) throw invalid('an empty command: give at least the program');
  return list.map(String);
}

function toBuffer(data) {
  if (typeof data === 'string') return Buffer.from(data);
  if (Buffer.isBuffer(data)) return data;
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  throw invalid('stdin data must be a string, Buffer, typed array or ArrayBuffer');
}

class Box extends Handle {
  constructor(ptr, runtime) {
    super(ptr, 'boxlite_box_free', 'box');
    this.runtime = runtime;
    const { fns } = lib();
    this.id = fns.boxlite_box_id(ptr);
    this.name = fns.boxlite_box_name(ptr);
    this.image = fns.boxlite_box_image(ptr);
  }
  get status() {
    const out = [0];
    check(lib().fns.boxlite_box_status(out, this._ptr()));
    return STATUSES[out[0]] || `unknown(${out[0]})`;
  }
  get createdAt() {
    const out = [0];
    check(lib().fns.boxlite_box_created_at(out, this._ptr()));
    return new Date(Number(out[0]));
  }
  /** Why the box last stopped (null if it never did). */
  get stopReason() {
    const { fns } = lib();
    const out = [null];
    check(fns.boxlite_box_stop_reason(out, this._ptr()));
    if (!out[0]) return null;
    const text = koffi.decode(out[0], 'char', -1);
    fns.boxlite_string_free(out[0]);
    return text;
  }
  start() { return checkAsync('boxlite_box_start', this._ptr()); }
  stop() { return checkAsync('boxlite_box_stop', this._ptr()); }
  restart() { return checkAsync('boxlite_box_restart', this._ptr()); }
  remove({ force = false } = {}) { return checkAsync('boxlite_box_remove', this._ptr(), force ? C.BOXLITE_REMOVE_FORCE : 0); }
  copyIn(hostSrc, guestDest) { return checkAsync('boxlite_box_copy_in', this._ptr(), String(hostSrc), String(guestDest), 0); }
  copyOut(guestSrc, hostDest) { return checkAsync('boxlite_box_copy_out', this._ptr(), String(guestSrc), String(hostDest), 0); }
  forwardedPort(guestPort, protocol = 'tcp') {
    const out = [0];
    check(lib().fns.boxlite_box_forwarded_port(out, this._ptr(), pick(PROTOCOLS, protocol, 'protocol'), guestPort));
    return out[0];
  }

  /**
   * Starts argv in the box and returns the running Execution (output collected for wait()).
   * options: { env?, cwd?, user?, timeout? (seconds), tty?: {rows, cols}, input?, stdin? }
   * stdin: false: the process reads end of file at once and there is no stdin to write; the
   * box then answers only once the process has finished (at most ~250 ms), so that a quick
   * one costs a single round trip.
   */
  startExec(argv, options = {}) { return this._exec(argv, options, false); }
  /** As startExec, but the Execution is an async iterable of {stream, data} chunks. */
  stream(argv, options = {}) { return this._exec(argv, options, true); }

  /** Runs argv to its end: an ExecResult. check: a failure or timeout throws. */
  async exec(argv, options = {}) {
    const hasInput = options.input !== undefined && options.input !== null;
    const execution = await this._exec(argv, { stdin: hasInput, ...options }, false);
    try {
      const result = await execution.wait();
      if (options.check) {
        if (result.timedOut) throw new ExecTimeout(`${argvOf(argv)[0]} timed out`, result.stdout, result.stderr, result);
        if (!result.ok) throw new ProcessExitError(result);
      }
      return result;
    } finally {
      await execution.close();
    }
  }

  async _exec(argv, options, streaming) {
    const { fns } = lib();
    const box = this._ptr();
    const list = argvOf(argv);
    const out = [null];
    check(fns.boxlite_command_new(out, list[0]));
    const cmd = out[0];
    let state = null;
    try {
      for (const arg of list.slice(1)) check(fns.boxlite_command_add_arg(cmd, arg));
      for (const [k, v] of Object.entries(options.env || {})) check(fns.boxlite_command_set_env(cmd, k, String(v)));
      if (options.cwd !== undefined) check(fns.boxlite_command_set_working_dir(cmd, options.cwd));
      if (options.user !== undefined) check(fns.boxlite_command_set_user(cmd, String(options.user)));
      if (options.timeout !== undefined && options.timeout !== null) {
        check(fns.boxlite_command_set_timeout_ms(cmd, Math.max(1, Math.round(options.timeout * 1000))));
      }
      if (options.tty) check(fns.boxlite_command_set_tty(cmd, options.tty.rows, options.tty.cols));
      if (options.stdin === false) check(fns.boxlite_command_set_no_stdin(cmd));
      state = new ExecState(streaming, outputLimitOf(options));
      const exe = [null];
      holdLoop(1);
      state.holding = true;
      let err;
      try {
        err = await callAsync('boxlite_box_exec', exe, box, cmd, state.callbacks());
      } catch (e) {
        state.release();
        throw e;
      }
      check(err); // on failure the library ran user_data_free only, which released state
      const execution = new Execution(exe[0], this, state, list[0]);
      if (options.input !== undefined && options.input !== null) {
        await execution.writeStdin(options.input);
        await execution.closeStdin();
      }
      return execution;
    } finally {
      fns.boxlite_command_free(cmd);
    }
  }
}

// Chunks (each at most 1 MiB) a streaming execution queues before it pauses the library's
// output; it resumes at half of it. A consumer slower than the process so holds at most
// this many, and the process blocks in write(2) meanwhile.
const STREAM_HIGH_WATER = 8;

// What the library's callbacks reach: kept apart from the Execution object, so that the
// Execution can be collected while its process still runs.
class ExecState {
  constructor(streaming, outputLimit) {
    this.streaming = streaming;
    this.limit = outputLimit;
    this.stdout = [];
    this.stderr = [];
    this.kept = { stdout: 0, stderr: 0 };
    this.truncated = { stdout: false, stderr: false };
    this.chunks = [];
    this.waiters = [];
    this.result = null; // ExecResult once on_exit fired
    this.error = null; // the error that ended it
    this.done = false;
    this.cancel = false;
    this.holding = false;
    this.cell = null; // the Execution's handle cell, once boxlite_box_exec returned it
    this.paused = false;
    this.exited = new Promise((resolve) => { this._exited = resolve; });
    this.registered = [];
  }
  callbacks() {
    const l = lib();
    const onOut = (stream) => (data, len) => {
      if (this.cancel) return 1;
      const n = Number(len);
      const chunk = n ? Buffer.from(new Uint8Array(koffi.view(data, n))) : Buffer.alloc(0);
      if (this.streaming) {
        this.push({ stream, data: chunk });
        return 0;
      }
      // Collected: at most `limit` bytes per stream; past it the library kills the process.
      const room = this.limit - this.kept[stream];
      const keep = chunk.length > room ? chunk.subarray(0, Math.max(room, 0)) : chunk;
      (stream === 'stdout' ? this.stdout : this.stderr).push(keep);
      this.kept[stream] += keep.length;
      if (keep.length < chunk.length) {
        this.truncated[stream] = true;
        return 1;
      }
      return 0;
    };
    const onExit = (status, error) => {
      const st = status ? koffi.decode(status, l.ExitStatus) : { exit_code: -1, signal: 0, timed_out: false, cancelled: false };
      if (error) {
        const { fns } = l;
        this.error = errors.fromCode(fns.boxlite_error_code(error), fns.boxlite_error_message(error) || '');
      }
      this.result = new ExecResult(st, Buffer.concat(this.stdout), Buffer.concat(this.stderr), { ...this.truncated });
      if (this.error) { this.error.stdout = this.result.stdout; this.error.stderr = this.result.stderr; }
      this.done = true;
      this.wake();
      this._exited();
    };
    const onFree = () => this.release();
    const so = koffi.register(onOut('stdout'), l.OutputCbPtr);
    const se = koffi.register(onOut('stderr'), l.OutputCbPtr);
    const ex = koffi.register(onExit, l.ExitCbPtr);
    const fr = koffi.register(onFree, l.FreeCbPtr);
    this.registered = [so, se, ex, fr];
    return { version: C.BOXLITE_EXEC_CALLBACKS_VERSION, on_stdout: so, on_stderr: se, on_exit: ex, user_data: null, user_data_free: fr };
  }
  /** user_data_free: the library will call none of the callbacks again. */
  release() {
    // Unregistered on the next turn: this may run inside one of them.
    const regs = this.registered;
    this.registered = [];
    setImmediate(() => { for (const r of regs) koffi.unregister(r); });
    if (!this.done) { this.done = true; this.wake(); this._exited(); }
    if (this.holding) { this.holding = false; holdLoop(-1); }
  }
  push(chunk) {
    this.chunks.push(chunk);
    if (this.chunks.length >= STREAM_HIGH_WATER) this.pauseOutput(true);
    this.wake();
  }
  shift() {
    const chunk = this.chunks.shift();
    if (this.chunks.length <= STREAM_HIGH_WATER / 2) this.pauseOutput(false);
    return chunk;
  }
  /** Holds the library's output back (or lets it go on); nothing to do once the handle is freed (freeing resumes it). */
  pauseOutput(paused) {
    const ptr = this.cell && this.cell.ptr;
    if (!ptr || paused === this.paused) return;
    check(lib().fns[paused ? 'boxlite_execution_pause_output' : 'boxlite_execution_resume_output'](ptr));
    this.paused = paused;
  }
  wake() { const w = this.waiters; this.waiters = []; for (const f of w) f(); }
  next() { return new Promise((resolve) => this.waiters.push(resolve)); }
}

class Execution extends Handle {
  constructor(ptr, box, state, program) {
    super(ptr, 'boxlite_execution_free', 'execution');
    this._cell.state = state;
    state.cell = this._cell;
    this.box = box;
    this._state = state;
    this._program = program;
    this.id = lib().fns.boxlite_execution_id(ptr);
  }
  /** The process's id inside the box. */
  get pid() {
    const out = [0];
    check(lib().fns.boxlite_execution_pid(out, this._ptr()));
    return out[0];
  }
  get running() { return !this._state.done; }
  /** Output so far (collected mode). */
  get stdout() { return Buffer.concat(this._state.stdout); }
  get stderr() { return Buffer.concat(this._state.stderr); }

  writeStdin(data) {
    const buf = toBuffer(data);
    return checkAsync('boxlite_execution_write_stdin', this._ptr(), buf, buf.length);
  }
  closeStdin() { return checkAsync('boxlite_execution_close_stdin', this._ptr()); }
  kill() { return checkAsync('boxlite_execution_kill', this._ptr()); }
  signal(signal) {
    const n = typeof signal === 'string' ? require('node:os').constants.signals[signal] : signal;
    if (!n) throw invalid(`unknown signal ${JSON.stringify(signal)}`);
    return checkAsync('boxlite_execution_signal', this._ptr(), n);
  }

  /**
   * Waits for the end (never blocking the JS thread): the ExecResult, or the error that
   * ended it (e.g. VmExited, with .stdout/.stderr so far). timeout (seconds): ExecTimeout
   * with the output so far if it still runs then (the process goes on).
   */
  async wait({ timeout } = {}) {
    const state = this._state;
    if (!state.done && timeout !== undefined && timeout !== null) {
      let timer;
      const expired = await Promise.race([
        state.exited.then(() => false),
        new Promise((resolve) => { timer = setTimeout(() => resolve(true), timeout * 1000); }),
      ]);
      clearTimeout(timer);
      if (expired) {
        throw new ExecTimeout(`${this._program} still running after ${timeout} s`, this.stdout, this.stderr, null);
      }
    }
    await state.exited;
    if (state.error) throw state.error;
    if (!state.result) throw new errors.Cancelled(19, 'the execution was released before it reported its end');
    return state.result;
  }

  async *[Symbol.asyncIterator]() {
    const state = this._state;
    if (!state.streaming) throw new errors.InvalidState(C.BOXLITE_ERROR_INVALID_STATE, 'iterate an execution started with box.stream()');
    let finished = false;
    try {
      for (;;) {
        while (state.chunks.length) yield state.shift();
        if (state.done) { finished = true; return; }
        await state.next();
      }
    } finally {
      if (!finished && !state.done) {
        // Left early: stop the process and stop taking its output.
        state.cancel = true;
        state.chunks = [];
        state.pauseOutput(false); // the rest is drained, and on_exit can come
        if (!this.closed) await this.kill().catch(() => {});
      }
    }
  }

  /** Kills the process if it still runs, then frees the handle. */
  async close() {
    if (!this.closed && !this._state.done) {
      this._state.cancel = true;
      await this.kill().catch(() => {});
    }
    return super.close();
  }
}

module.exports = {
  version, Runtime, Box, Execution, ExecResult, findLibrary, LibraryNotFound, constants: C,
  ...errors,
};
