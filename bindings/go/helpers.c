#include "helpers.h"
#include "_cgo_export.h"

boxlite_error_t *bx_box_exec(boxlite_execution_t **out, const boxlite_box_t *box,
                             const boxlite_command_t *command, uintptr_t handle) {
	boxlite_exec_callbacks_t cb;
	cb.version = BOXLITE_EXEC_CALLBACKS_VERSION;
	cb.on_stdout = (boxlite_output_cb)boxliteGoOnStdout;
	cb.on_stderr = (boxlite_output_cb)boxliteGoOnStderr;
	cb.on_exit = (boxlite_exit_cb)boxliteGoOnExit;
	cb.user_data = (void *)handle;
	cb.user_data_free = (boxlite_user_data_free_cb)boxliteGoUserDataFree;
	return boxlite_box_exec(out, box, command, &cb);
}

boxlite_exit_status_t bx_exit_status_init(void) {
	boxlite_exit_status_t s = BOXLITE_EXIT_STATUS_INIT;
	return s;
}

boxlite_port_forward_t bx_port_forward_init(void) {
	boxlite_port_forward_t s = BOXLITE_PORT_FORWARD_INIT;
	return s;
}

boxlite_box_metrics_t bx_box_metrics_init(void) {
	boxlite_box_metrics_t s = BOXLITE_BOX_METRICS_INIT;
	return s;
}
