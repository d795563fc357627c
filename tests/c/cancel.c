/* A callback that returns non-zero cancels: the process group is killed, on_exit fires once
 * with `cancelled`, user_data_free once; and user_data_free also runs when exec fails.
 * Output paused from a callback stops coming (on_exit too) until it is resumed, then all of
 * it arrives. */
#include "common.h"

#include <time.h>

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

static void sleep_ms(long ms) {
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

typedef struct {
    boxlite_execution_t *execution; /* set by main once boxlite_box_exec returned */
    size_t bytes, bytes_at_pause;
    int chunks, paused, exits;
} paced_t;

/* The first chunk pauses the output (once main has the handle to pause with). */
static int pause_at_first(const uint8_t *data, size_t len, void *user_data) {
    (void)data;
    paced_t *paced = user_data;
    paced->bytes += len;
    paced->chunks++;
    if (!paced->paused) {
        boxlite_execution_t *execution;
        while ((execution = __atomic_load_n(&paced->execution, __ATOMIC_ACQUIRE)) == NULL) sleep_ms(1);
        OK(boxlite_execution_pause_output(execution));
        OK(boxlite_execution_pause_output(execution)); /* twice is fine */
        paced->paused = 1;
        paced->bytes_at_pause = paced->bytes;
    }
    return 0;
}
static void paced_exit(const boxlite_exit_status_t *status, const boxlite_error_t *error, void *user_data) {
    CHECK(error == NULL && status->exit_code == 0);
    ((paced_t *)user_data)->exits++;
}

static void pausing_holds_output_back_until_resumed(boxlite_box_t *box) {
    paced_t paced;
    memset(&paced, 0, sizeof paced);
    boxlite_exec_callbacks_t callbacks = {BOXLITE_EXEC_CALLBACKS_VERSION, pause_at_first, NULL, paced_exit, &paced, NULL};
    boxlite_command_t *command = NULL;
    boxlite_execution_t *execution = NULL;
    OK(boxlite_command_new(&command, "head"));
    OK(boxlite_command_add_arg(command, "-c"));
    OK(boxlite_command_add_arg(command, "4000000"));
    OK(boxlite_command_add_arg(command, "/dev/zero"));
    OK(boxlite_box_exec(&execution, box, command, &callbacks));
    __atomic_store_n(&paced.execution, execution, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&paced.paused, __ATOMIC_ACQUIRE)) sleep_ms(5);
    sleep_ms(700); /* the process has long finished; nothing may come meanwhile */
    CHECK(__atomic_load_n(&paced.bytes, __ATOMIC_ACQUIRE) == paced.bytes_at_pause);
    CHECK(paced.bytes_at_pause < 4000000 && paced.exits == 0);
    boxlite_exit_status_t status = BOXLITE_EXIT_STATUS_INIT;
    EXPECT_ERROR(boxlite_execution_wait_timeout(&status, execution, 0), BOXLITE_ERROR_STILL_RUNNING);
    OK(boxlite_execution_resume_output(execution));
    OK(boxlite_execution_resume_output(execution)); /* twice is fine */
    OK(boxlite_execution_wait(&status, execution));
    CHECK(paced.bytes == 4000000 && paced.exits == 1 && status.exit_code == 0);
    EXPECT_ERROR(boxlite_execution_pause_output(NULL), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_execution_free(execution);
    boxlite_command_free(command);
}

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

    pausing_holds_output_back_until_resumed(box);

    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}
