/* A callback that returns non-zero cancels: the process group is killed, on_exit fires once
 * with `cancelled`, user_data_free once; and user_data_free also runs when exec fails. */
#include "common.h"

typedef struct {
    int chunks, exits, frees;
    boxlite_exit_status_t status;
} seen_t;

static int stop_at_first(const uint8_t *data, size_t len, void *user_data) {
    (void)data;
    (void)len;
    ((seen_t *)user_data)->chunks++;
    return 1;
}
static void on_exit_cb(const boxlite_exit_status_t *status, const boxlite_error_t *error, void *user_data) {
    seen_t *seen = user_data;
    CHECK(error == NULL);
    seen->exits++;
    seen->status = *status;
}
static void count_free(void *user_data) { ((seen_t *)user_data)->frees++; }

int main(void) {
    boxlite_runtime_t *runtime = test_runtime();
    boxlite_box_t *box = test_box(runtime);
    seen_t seen;
    memset(&seen, 0, sizeof seen);
    boxlite_exec_callbacks_t callbacks = {BOXLITE_EXEC_CALLBACKS_VERSION, stop_at_first, NULL, on_exit_cb, &seen, count_free};

    boxlite_command_t *command = NULL;
    boxlite_execution_t *execution = NULL;
    OK(boxlite_command_new(&command, "yes")); /* writes forever */
    OK(boxlite_box_exec(&execution, box, command, &callbacks));
    boxlite_exit_status_t status = BOXLITE_EXIT_STATUS_INIT;
    OK(boxlite_execution_wait(&status, execution));
    CHECK(status.cancelled && status.signal == 9);
    CHECK(seen.chunks == 1 && seen.exits == 1 && seen.frees == 1 && seen.status.cancelled);
    boxlite_execution_free(execution);
    boxlite_command_free(command);

    /* exec fails: user_data_free still runs exactly once, on_exit never (the error is the result) */
    memset(&seen, 0, sizeof seen);
    OK(boxlite_command_new(&command, "no-such-program"));
    execution = NULL;
    EXPECT_ERROR(boxlite_box_exec(&execution, box, command, &callbacks), BOXLITE_ERROR_PROGRAM_NOT_FOUND);
    CHECK(execution == NULL && seen.frees == 1 && seen.exits == 0);
    /* an unknown callbacks version is refused */
    boxlite_exec_callbacks_t future = callbacks;
    future.version = 99;
    memset(&seen, 0, sizeof seen);
    EXPECT_ERROR(boxlite_box_exec(&execution, box, command, &future), BOXLITE_ERROR_INVALID_ARGUMENT);
    CHECK(seen.frees == 1);
    boxlite_command_free(command);

    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}
