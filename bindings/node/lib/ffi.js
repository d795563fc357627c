'use strict';
// The C declarations of include/boxlite.h, for koffi. Loaded once, on first use.
const koffi = require('koffi');
const { findLibrary } = require('./loader');

const C = {
  BOXLITE_VERSION_MAJOR: 0, BOXLITE_VERSION_MINOR: 2, BOXLITE_VERSION_PATCH: 0,
  BOXLITE_REMOVE_FORCE: 1, BOXLITE_DISK_READ_ONLY: 1, BOXLITE_VOLUME_READ_ONLY: 1,
  BOXLITE_EXEC_CALLBACKS_VERSION: 1,
  BOXLITE_BOX_CONFIGURED: 0, BOXLITE_BOX_RUNNING: 1, BOXLITE_BOX_STOPPED: 2, BOXLITE_BOX_REMOVED: 3,
  BOXLITE_NETWORK_NONE: 0, BOXLITE_NETWORK_OUTBOUND: 1, BOXLITE_NETWORK_ALLOW_LIST: 2,
  BOXLITE_PROTOCOL_TCP: 0, BOXLITE_PROTOCOL_UDP: 1,
  BOXLITE_ENGINE_AUTO: 0, BOXLITE_ENGINE_KRUN: 1, BOXLITE_ENGINE_QEMU: 2,
  BOXLITE_ERROR_INVALID_ARGUMENT: 1, BOXLITE_ERROR_NOT_FOUND: 2, BOXLITE_ERROR_INVALID_STATE: 3,
  BOXLITE_ERROR_VM_EXITED: 7, BOXLITE_ERROR_PROGRAM_NOT_FOUND: 9, BOXLITE_ERROR_HOME_LOCKED: 14,
  BOXLITE_ERROR_STILL_RUNNING: 20,
};

const DECLS = [
  'const char *boxlite_version(void)',
  'uint32_t boxlite_version_number(void)',
  'void boxlite_string_free(void *text)',
  'boxlite_error_code_t boxlite_error_code(const boxlite_error_t *error)',
  'const char *boxlite_error_message(const boxlite_error_t *error)',
  'void boxlite_error_free(boxlite_error_t *error)',
  // runtime
  'boxlite_error_t *boxlite_runtime_options_new(_Out_ boxlite_runtime_options_t **out)',
  'boxlite_error_t *boxlite_runtime_options_set_home(boxlite_runtime_options_t *options, const char *home)',
  'boxlite_error_t *boxlite_runtime_options_set_engine(boxlite_runtime_options_t *options, uint32_t engine)',
  'boxlite_error_t *boxlite_runtime_options_set_log_to_home(boxlite_runtime_options_t *options, bool enabled)',
  'void boxlite_runtime_options_free(boxlite_runtime_options_t *options)',
  'boxlite_error_t *boxlite_runtime_new(_Out_ boxlite_runtime_t **out, const boxlite_runtime_options_t *options)',
  'void boxlite_runtime_free(boxlite_runtime_t *runtime)',
  'const char *boxlite_runtime_home(const boxlite_runtime_t *runtime)',
  'boxlite_error_t *boxlite_runtime_get_box(_Out_ boxlite_box_t **out, const boxlite_runtime_t *runtime, const char *id_or_name)',
  'boxlite_error_t *boxlite_runtime_list_boxes(_Out_ boxlite_box_list_t **out, const boxlite_runtime_t *runtime)',
  'boxlite_error_t *boxlite_box_list_len(_Out_ size_t *out, const boxlite_box_list_t *list)',
  'boxlite_error_t *boxlite_box_list_get(_Out_ boxlite_box_t **out, const boxlite_box_list_t *list, size_t index)',
  'void boxlite_box_list_free(boxlite_box_list_t *list)',
  // box options
  'boxlite_error_t *boxlite_box_options_new(_Out_ boxlite_box_options_t **out)',
  'boxlite_error_t *boxlite_box_options_set_name(boxlite_box_options_t *options, const char *name)',
  'boxlite_error_t *boxlite_box_options_set_cpus(boxlite_box_options_t *options, uint32_t cpus)',
  'boxlite_error_t *boxlite_box_options_set_memory_mib(boxlite_box_options_t *options, uint32_t memory_mib)',
  'boxlite_error_t *boxlite_box_options_set_image(boxlite_box_options_t *options, const char *image)',
  'boxlite_error_t *boxlite_box_options_set_detached(boxlite_box_options_t *options, bool detached)',
  'boxlite_error_t *boxlite_box_options_set_disk_size_gib(boxlite_box_options_t *options, uint32_t gib)',
  'boxlite_error_t *boxlite_box_options_set_root_disk(boxlite_box_options_t *options, const char *path, uint32_t flags)',
  'boxlite_error_t *boxlite_box_options_add_volume(boxlite_box_options_t *options, const char *host_path, const char *guest_path, uint32_t flags)',
  'boxlite_error_t *boxlite_box_options_set_network(boxlite_box_options_t *options, uint32_t mode)',
  'boxlite_error_t *boxlite_box_options_add_network_allow(boxlite_box_options_t *options, const char *rule)',
  'boxlite_error_t *boxlite_box_options_set_allow_host_loopback(boxlite_box_options_t *options, bool allow)',
  'boxlite_error_t *boxlite_box_options_add_port_forward(boxlite_box_options_t *options, uint32_t protocol, const char *host_addr, uint16_t host_port, uint16_t guest_port)',
  'boxlite_error_t *boxlite_box_options_add_dns_server(boxlite_box_options_t *options, const char *addr)',
  'void boxlite_box_options_free(boxlite_box_options_t *options)',
  // box
  'boxlite_error_t *boxlite_box_create(_Out_ boxlite_box_t **out, const boxlite_runtime_t *runtime, const boxlite_box_options_t *options)',
  'const char *boxlite_box_id(const boxlite_box_t *box)',
  'const char *boxlite_box_name(const boxlite_box_t *box)',
  'const char *boxlite_box_image(const boxlite_box_t *box)',
  'boxlite_error_t *boxlite_box_created_at(_Out_ uint64_t *out, const boxlite_box_t *box)',
  'boxlite_error_t *boxlite_box_stop_reason(_Out_ void **out, const boxlite_box_t *box)',
  'boxlite_error_t *boxlite_box_start(const boxlite_box_t *box)',
  'boxlite_error_t *boxlite_box_stop(const boxlite_box_t *box)',
  'boxlite_error_t *boxlite_box_restart(const boxlite_box_t *box)',
  'boxlite_error_t *boxlite_box_remove(const boxlite_box_t *box, uint32_t flags)',
  'void boxlite_box_free(boxlite_box_t *box)',
  'boxlite_error_t *boxlite_box_status(_Out_ uint32_t *out, const boxlite_box_t *box)',
  'boxlite_error_t *boxlite_box_copy_in(const boxlite_box_t *box, const char *host_src, const char *guest_dest, uint32_t flags)',
  'boxlite_error_t *boxlite_box_copy_out(const boxlite_box_t *box, const char *guest_src, const char *host_dest, uint32_t flags)',
  'boxlite_error_t *boxlite_box_forwarded_port(_Out_ uint16_t *out_host_port, const boxlite_box_t *box, uint32_t protocol, uint16_t guest_port)',
  // command and execution
  'boxlite_error_t *boxlite_command_new(_Out_ boxlite_command_t **out, const char *program)',
  'boxlite_error_t *boxlite_command_add_arg(boxlite_command_t *command, const char *arg)',
  'boxlite_error_t *boxlite_command_set_env(boxlite_command_t *command, const char *name, const char *value)',
  'boxlite_error_t *boxlite_command_set_working_dir(boxlite_command_t *command, const char *dir)',
  'boxlite_error_t *boxlite_command_set_user(boxlite_command_t *command, const char *user)',
  'boxlite_error_t *boxlite_command_set_timeout_ms(boxlite_command_t *command, uint64_t timeout_ms)',
  'boxlite_error_t *boxlite_command_set_tty(boxlite_command_t *command, uint16_t rows, uint16_t cols)',
  'boxlite_error_t *boxlite_command_set_no_stdin(boxlite_command_t *command)',
  'void boxlite_command_free(boxlite_command_t *command)',
  'boxlite_error_t *boxlite_box_exec(_Out_ boxlite_execution_t **out, const boxlite_box_t *box, const boxlite_command_t *command, const boxlite_exec_callbacks_t *callbacks)',
  'boxlite_error_t *boxlite_execution_write_stdin(const boxlite_execution_t *execution, const uint8_t *data, size_t len)',
  'boxlite_error_t *boxlite_execution_close_stdin(const boxlite_execution_t *execution)',
  'boxlite_error_t *boxlite_execution_wait_timeout(_Inout_ boxlite_exit_status_t *out_status, const boxlite_execution_t *execution, uint64_t timeout_ms)',
  'const char *boxlite_execution_id(const boxlite_execution_t *execution)',
  'boxlite_error_t *boxlite_execution_pid(_Out_ uint32_t *out, const boxlite_execution_t *execution)',
  'boxlite_error_t *boxlite_execution_signal(const boxlite_execution_t *execution, int32_t signal)',
  'boxlite_error_t *boxlite_execution_kill(const boxlite_execution_t *execution)',
  'boxlite_error_t *boxlite_execution_pause_output(const boxlite_execution_t *execution)',
  'boxlite_error_t *boxlite_execution_resume_output(const boxlite_execution_t *execution)',
  'void boxlite_execution_free(boxlite_execution_t *execution)',
];

let cached = null;

function lib() {
  if (cached) return cached;
  const path = findLibrary();
  // koffi runs each call on a stack of its own: 1 MiB (sync) and 128 KiB (async) by
  // default, too small for the library's boot path (deep async frames, more so in debug
  // builds). 8 MiB each, the size of a default thread stack.
  try {
    koffi.config({ ...koffi.config(), sync_stack_size: 8 << 20, async_stack_size: 8 << 20 });
  } catch (e) {
    // koffi was configured and used by someone else first: keep its settings.
    if (!/already|after/i.test(e.message)) throw e;
  }
  const handle = koffi.load(path);
  for (const name of ['boxlite_error_t', 'boxlite_runtime_options_t', 'boxlite_runtime_t', 'boxlite_box_options_t',
    'boxlite_box_t', 'boxlite_box_list_t', 'boxlite_command_t', 'boxlite_execution_t']) {
    koffi.opaque(name);
  }
  koffi.alias('boxlite_error_code_t', 'int32_t');
  const ExitStatus = koffi.struct('boxlite_exit_status_t', {
    size: 'uint32_t', exit_code: 'int32_t', signal: 'int32_t', timed_out: 'bool', cancelled: 'bool',
  });
  const OutputCb = koffi.proto('int32_t boxlite_output_cb(const void *data, size_t len, void *user_data)');
  const ExitCb = koffi.proto('void boxlite_exit_cb(const boxlite_exit_status_t *status, const boxlite_error_t *error, void *user_data)');
  const FreeCb = koffi.proto('void boxlite_user_data_free_cb(void *user_data)');
  koffi.struct('boxlite_exec_callbacks_t', {
    version: 'uint32_t',
    on_stdout: koffi.pointer(OutputCb), on_stderr: koffi.pointer(OutputCb), on_exit: koffi.pointer(ExitCb),
    user_data: 'void *', user_data_free: koffi.pointer(FreeCb),
  });
  const fns = {};
  for (const decl of DECLS) {
    const name = decl.match(/(boxlite_\w+)\(/)[1];
    try {
      fns[name] = handle.func(decl);
    } catch (e) {
      // An entry point missing from an older library: named when it is used.
      fns[name] = () => { throw new Error(`${name} is not in ${path} (an older libboxlite?): ${e.message}`); };
      fns[name].async = fns[name];
    }
  }
  cached = { path, fns, ExitStatus, OutputCbPtr: koffi.pointer(OutputCb), ExitCbPtr: koffi.pointer(ExitCb), FreeCbPtr: koffi.pointer(FreeCb) };
  return cached;
}

module.exports = { lib, C, koffi, DECLS };
