/* Callback streaming: stdout and stderr chunks arrive apart and in order, stdin reaches the
 * process, the exit callback fires once with the code that wait reports too. */
#include "common.h"


typedef struct {
    char out[4096], err[4096];
    size_t out_len, err_len;
    int exits, frees, exit_code;
} collected_t;

static int append(char *buf, size_t *len, const uint8_t *data, size_t n) {
    if (*len + n >= 4096) return 1;
    memcpy(buf + *len, data, n);
    *len += n;
    buf[*len] = 0;
    return 0;
}
static int on_stdout(const uint8_t *data, size_t len, void *user_data) {
    collected_t *c = user_data;
    return append(c->out, &c->out_len, data, len);
}
static int on_stderr(const uint8_t *data, size_t len, void *user_data) {
    collected_t *c = user_data;
    return append(c->err, &c->err_len, data, len);
}
static void on_exit_cb(const boxlite_exit_status_t *status, const boxlite_error_t *error, void *user_data) {
    collected_t *c = user_data;
    CHECK(status != NULL && error == NULL);
    c->exits++;
    c->exit_code = status->exit_code;
}
static void free_collected(void *user_data) { ((collected_t *)user_data)->frees++; }

int main(void) {
    boxlite_runtime_t *runtime = test_runtime();
    boxlite_box_t *box = test_box(runtime);
    collected_t c;
    memset(&c, 0, sizeof c);
    boxlite_exec_callbacks_t callbacks = {BOXLITE_EXEC_CALLBACKS_VERSION, on_stdout, on_stderr, on_exit_cb, &c, free_collected};

    boxlite_command_t *command = NULL;
    OK(boxlite_command_new(&command, "sh"));
    OK(boxlite_command_add_arg(command, "-c"));
    OK(boxlite_command_add_arg(command, "read line; echo \"got $line\"; echo oops >&2; echo $GREETING; exit 7"));
    OK(boxlite_command_set_env(command, "GREETING", "hi"));
    boxlite_execution_t *execution = NULL;
    OK(boxlite_box_exec(&execution, box, command, &callbacks));
    OK(boxlite_execution_write_stdin(execution, (const uint8_t *)"ping\n", 5));
    OK(boxlite_execution_close_stdin(execution));
    boxlite_exit_status_t status;
    memset(&status, 0xff, sizeof status);
    status.size = sizeof status;
    OK(boxlite_execution_wait(&status, execution));
    CHECK(status.exit_code == 7 && status.signal == 0 && !status.timed_out && !status.cancelled);
    CHECK(c.exits == 1 && c.frees == 1 && c.exit_code == 7);
    if (strcmp(c.out, "got ping\nhi\n") != 0) FAIL("stdout was %s", c.out);
    if (strcmp(c.err, "oops\n") != 0) FAIL("stderr was %s", c.err);
    /* wait again: the same answer */
    OK(boxlite_execution_wait(&status, execution));
    CHECK(status.exit_code == 7);
    boxlite_execution_free(execution);
    boxlite_command_free(command);

    /* a timeout kills the process group and says so */
    OK(boxlite_command_new(&command, "sleep"));
    OK(boxlite_command_add_arg(command, "100"));
    OK(boxlite_command_set_timeout_ms(command, 500));
    OK(boxlite_box_exec(&execution, box, command, NULL));
    OK(boxlite_execution_wait(&status, execution));
    CHECK(status.timed_out && status.signal == 9 && status.exit_code == -1);
    boxlite_execution_free(execution);
    boxlite_command_free(command);

    /* signal reaches the process */
    OK(boxlite_command_new(&command, "sleep"));
    OK(boxlite_command_add_arg(command, "100"));
    OK(boxlite_box_exec(&execution, box, command, NULL));
    OK(boxlite_execution_signal(execution, 15));
    OK(boxlite_execution_wait(&status, execution));
    CHECK(status.signal == 15 && !status.timed_out);
    boxlite_execution_free(execution);
    boxlite_command_free(command);

    OK(boxlite_box_stop(box));
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}
