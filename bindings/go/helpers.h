/* C helpers of the Go binding (helpers.c). */
#ifndef BOXLITE_GO_HELPERS_H
#define BOXLITE_GO_HELPERS_H
#include <boxlite.h>
#include <stdint.h>

/* boxlite_box_exec with the Go callbacks; `handle` (a runtime/cgo.Handle) becomes
 * user_data here, so no Go pointer is handed to C. */
boxlite_error_t *bx_box_exec(boxlite_execution_t **out, const boxlite_box_t *box,
                             const boxlite_command_t *command, uintptr_t handle);
/* The sized structs, initialised by the header's own _INIT macros. */
boxlite_exit_status_t bx_exit_status_init(void);
boxlite_port_forward_t bx_port_forward_init(void);
boxlite_box_metrics_t bx_box_metrics_init(void);
#endif
