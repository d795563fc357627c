/* Free order: the runtime first, then the box and an execution still work; a child keeps
 * its parent alive. */
#include "common.h"

int main(void) {
    boxlite_runtime_t *runtime = test_runtime();
    boxlite_box_t *box = test_box(runtime);
    boxlite_runtime_free(runtime); /* the box keeps what it needs */

    boxlite_command_t *command = NULL;
    boxlite_execution_t *execution = NULL;
    OK(boxlite_command_new(&command, "cat"));
    OK(boxlite_box_exec(&execution, box, command, NULL));
    boxlite_command_free(command);
    boxlite_box_free(box); /* the execution keeps the box */

    OK(boxlite_execution_write_stdin(execution, (const uint8_t *)"x", 1));
    OK(boxlite_execution_close_stdin(execution));
    boxlite_exit_status_t status = BOXLITE_EXIT_STATUS_INIT;
    OK(boxlite_execution_wait(&status, execution));
    CHECK(status.exit_code == 0);
    boxlite_execution_free(execution); /* last handle: the box's VM is stopped */
    return 0;
}
