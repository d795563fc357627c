// Type declarations of the boxlite Node binding (hand-written; see index.js).

export type Engine = 'auto' | 'krun' | 'qemu';
export type NetworkMode = 'none' | 'outbound' | 'allow_list';
export type Protocol = 'tcp' | 'udp';
export type BoxStatus = 'configured' | 'running' | 'stopped' | 'removed';

export interface RuntimeOptions {
  /** The home directory (created if missing; locked while open). */
  home?: string;
  engine?: Engine;
  /** Write the library's logs to <home>/logs/boxlite.log. */
  logToHome?: boolean;
}

export interface Volume { hostPath: string; guestPath: string; readOnly?: boolean }
export interface Port { guest: number; host?: number; protocol?: Protocol; hostAddr?: string }

export interface BoxOptions {
  name?: string;
  cpus?: number;
  memoryMib?: number;
  image?: string;
  detached?: boolean;
  diskSizeGib?: number;
  rootDisk?: string;
  rootDiskReadOnly?: boolean;
  volumes?: Array<Volume | [string, string, boolean?]>;
  network?: NetworkMode;
  /** Allow rules (network: 'allow_list'). */
  allow?: string[];
  allowHostLoopback?: boolean;
  ports?: Array<Port | number>;
  dns?: string[];
}

export interface ExecOptions {
  env?: Record<string, string | number>;
  cwd?: string;
  user?: string | number;
  /** Seconds; the library then kills the process group (signal 9, timedOut). */
  timeout?: number;
  tty?: { rows: number; cols: number };
  /** Written to stdin, which is then closed. */
  input?: string | Uint8Array | ArrayBuffer;
  /**
   * Collected output (exec, startExec): at most this many bytes per stream (default 64 MiB);
   * past it the process is killed and the result's stdoutTruncated/stderrTruncated say so.
   * box.stream() is not limited: its reader holds what it keeps.
   */
  outputLimit?: number;
  /**
   * false: the process reads end of file at once and there is no stdin to write; the box
   * answers only once the process has finished (at most ~250 ms): a quick one costs a
   * single round trip. exec() sets it when there is no input.
   */
  stdin?: boolean;
}

export interface RunOptions extends ExecOptions {
  /** Throw ProcessExitError (non-zero or signalled) or ExecTimeout (timed out). */
  check?: boolean;
}

export interface OutputChunk { stream: 'stdout' | 'stderr'; data: Buffer }

export declare class ExecResult {
  readonly exitCode: number;
  readonly signal: number;
  readonly timedOut: boolean;
  readonly cancelled: boolean;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  /** The stream passed outputLimit: it holds the first outputLimit bytes, the process was killed. */
  readonly stdoutTruncated: boolean;
  readonly stderrTruncated: boolean;
  readonly ok: boolean;
}

declare abstract class Handle implements AsyncDisposable {
  readonly closed: boolean;
  /** Frees the handle; closing twice is harmless. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export declare class Runtime extends Handle {
  static open(options?: RuntimeOptions): Promise<Runtime>;
  readonly home: string;
  createBox(options?: BoxOptions): Promise<Box>;
  /** By id or name; NotFound names it. */
  getBox(idOrName: string): Promise<Box>;
  /** Oldest first. */
  listBoxes(): Promise<Box[]>;
}

export declare class Box extends Handle {
  readonly runtime: Runtime;
  readonly id: string;
  readonly name: string | null;
  readonly image: string | null;
  readonly status: BoxStatus;
  readonly createdAt: Date;
  readonly stopReason: string | null;
  start(): Promise<void>;
  stop(): Promise<void>;
  restart(): Promise<void>;
  remove(options?: { force?: boolean }): Promise<void>;
  exec(argv: string | string[], options?: RunOptions): Promise<ExecResult>;
  /** A running execution whose output is collected for wait(). */
  startExec(argv: string | string[], options?: ExecOptions): Promise<Execution>;
  /** A running execution to iterate: `for await (const chunk of execution)`. */
  stream(argv: string | string[], options?: ExecOptions): Promise<Execution>;
  copyIn(hostSrc: string, guestDest: string): Promise<void>;
  copyOut(guestSrc: string, hostDest: string): Promise<void>;
  forwardedPort(guestPort: number, protocol?: Protocol): number;
}

export declare class Execution extends Handle implements AsyncIterable<OutputChunk> {
  readonly box: Box;
  readonly id: string;
  readonly pid: number;
  readonly running: boolean;
  /** Output so far (startExec). */
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  writeStdin(data: string | Uint8Array | ArrayBuffer): Promise<void>;
  closeStdin(): Promise<void>;
  /** timeout (seconds): ExecTimeout with the output so far while it still runs. */
  wait(options?: { timeout?: number }): Promise<ExecResult>;
  kill(): Promise<void>;
  signal(signal: number | NodeJS.Signals): Promise<void>;
  /** Kills the process if it still runs, then frees the handle. */
  close(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<OutputChunk>;
}

export declare function version(): string;
export declare function findLibrary(): string;

export declare class LibraryNotFound extends Error { readonly searched: string[] }

export declare class BoxliteError extends Error {
  /** BOXLITE_ERROR_* (0 for the binding's own ExecTimeout and ProcessExitError). */
  readonly code: number;
  /** Output so far, on errors that ended an execution (e.g. VmExited). */
  stdout?: Buffer;
  stderr?: Buffer;
}
export declare class InvalidArgument extends BoxliteError {}
export declare class NotFound extends BoxliteError {}
export declare class InvalidState extends BoxliteError {}
export declare class EngineUnavailable extends BoxliteError {}
export declare class HelperNotFound extends BoxliteError {}
export declare class BootFailed extends BoxliteError {}
export declare class VmExited extends BoxliteError {}
export declare class AgentError extends BoxliteError {}
export declare class ProgramNotFound extends BoxliteError {}
export declare class NotExecutable extends BoxliteError {}
export declare class WorkingDirNotFound extends BoxliteError {}
export declare class UserNotFound extends BoxliteError {}
export declare class ExecFailed extends BoxliteError {}
export declare class HomeLocked extends BoxliteError {}
export declare class IoError extends BoxliteError {}
export declare class ImageError extends BoxliteError {}
export declare class Unauthorized extends BoxliteError {}
export declare class PullError extends BoxliteError {}
export declare class Cancelled extends BoxliteError {}
export declare class StillRunning extends BoxliteError {}
export declare class InternalError extends BoxliteError {}
export declare class ExecTimeout extends BoxliteError {
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  /** The result when the process ended by its timeout; null while it still runs. */
  readonly result: ExecResult | null;
}
export declare class ProcessExitError extends BoxliteError { readonly result: ExecResult }

export declare const constants: Record<string, number>;
