'use strict';
// BoxliteError and one subclass per BOXLITE_ERROR_* code (include/boxlite.h).

class BoxliteError extends Error {
  constructor(code, message) {
    super(message);
    this.name = this.constructor.name;
    this.code = code;
  }
}

const CODES = {
  1: 'InvalidArgument', 2: 'NotFound', 3: 'InvalidState', 4: 'EngineUnavailable',
  5: 'HelperNotFound', 6: 'BootFailed', 7: 'VmExited', 8: 'AgentError', 9: 'ProgramNotFound',
  10: 'NotExecutable', 11: 'WorkingDirNotFound', 12: 'UserNotFound', 13: 'ExecFailed',
  14: 'HomeLocked', 15: 'IoError', 16: 'ImageError', 17: 'Unauthorized', 18: 'PullError',
  19: 'Cancelled', 20: 'StillRunning', 99: 'InternalError',
};

const classes = { BoxliteError };
const byCode = new Map();
for (const [code, name] of Object.entries(CODES)) {
  // A named class per code, so `instanceof boxlite.NotFound` and err.name both work.
  const cls = { [name]: class extends BoxliteError {} }[name];
  cls.code = Number(code);
  classes[name] = cls;
  byCode.set(Number(code), cls);
}

/** The error of a library code and message: its subclass, or BoxliteError for an unknown code. */
function fromCode(code, message) {
  const cls = byCode.get(code) || BoxliteError;
  return new cls(code, message);
}

/** A command ran out of its time (checked run, or a bounded wait): the output so far is kept. */
class ExecTimeout extends classes.BoxliteError {
  constructor(message, stdout, stderr, result) {
    super(0, message);
    this.stdout = stdout;
    this.stderr = stderr;
    this.result = result; // the ExecResult when the process ended by its timeout, else null (still running)
  }
}

/** A checked run whose process exited non-zero or by a signal. */
class ProcessExitError extends classes.BoxliteError {
  constructor(result) {
    super(0, `process exited with ${result.signal ? `signal ${result.signal}` : `code ${result.exitCode}`}`);
    this.result = result;
  }
}

module.exports = { ...classes, ExecTimeout, ProcessExitError, fromCode, CODES };
