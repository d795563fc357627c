/* An execution's id and pid; a bounded wait that reports "still running" as its own result
 * (an event loop polls with it instead of blocking a thread); a command with no stdin; a
 * tty resized while the process runs; collected output capped at the command's limit. */
#include "common.h"

static boxlite_command_t *sh(const char *script) {
    boxlite_command_t *command = NULL;
    OK(boxlite_command_new(&command, "sh"));
    OK(boxlite_command_add_arg(command, "-c"));
    OK(boxlite_command_add_arg(command, script));
    return command;
}

typedef struct { char out[256]; size_t len; } collected_t;
static int collect(const uint8_t *data, size_t len, void *user_data) {
    collected_t *c = user_data;
    size_t room = sizeof c->out - 1 - c->len;
    if (len > room) len = room;
    memcpy(c->out + c->len, data, len);
    c->len += len;
    return 0;
}

int main(void) {
    boxlite_runtime_t *runtime = test_runtime();
    boxlite_box_t *box = test_box(runtime);

    /* a bounded wait: still running, then finished */
    boxlite_command_t *command = sh("read line; exit 3");
    boxlite_execution_t *execution = NULL;
    OK(boxlite_box_exec(&execution, box, command, NULL));
    CHECK(boxlite_execution_id(execution) != NULL && strlen(boxlite_execution_id(execution)) > 0);
    CHECK(boxlite_execution_id(NULL) == NULL);
    uint32_t pid = 0;
    OK(boxlite_execution_pid(&pid, execution));
    CHECK(pid > 1);
    EXPECT_ERROR(boxlite_execution_pid(&pid, NULL), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_exit_status_t status = BOXLITE_EXIT_STATUS_INIT;
    status.exit_code = 77;
    EXPECT_ERROR(boxlite_execution_wait_timeout(&status, execution, 0), BOXLITE_ERROR_STILL_RUNNING);
    EXPECT_ERROR(boxlite_execution_wait_timeout(&status, execution, 200), BOXLITE_ERROR_STILL_RUNNING);
    CHECK(status.exit_code == 77); /* untouched while still running */
    OK(boxlite_execution_write_stdin(execution, (const uint8_t *)"go\n", 3));
    OK(boxlite_execution_wait_timeout(&status, execution, 60000));
    CHECK(status.exit_code == 3);
    OK(boxlite_execution_wait_timeout(&status, execution, 0)); /* over: answers at once */
    boxlite_execution_free(execution);
    boxlite_command_free(command);

    /* no stdin: `cat` reads end of file at once, its output and exit come with the start,
     * and there is no stdin to write */
    command = sh("cat; echo done; exit 5");
    EXPECT_ERROR(boxlite_command_set_no_stdin(NULL), BOXLITE_ERROR_INVALID_ARGUMENT);
    OK(boxlite_command_set_no_stdin(command));
    collected_t ended;
    memset(&ended, 0, sizeof ended);
    boxlite_exec_callbacks_t quick = {BOXLITE_EXEC_CALLBACKS_VERSION, collect, NULL, NULL, &ended, NULL};
    OK(boxlite_box_exec(&execution, box, command, &quick));
    EXPECT_ERROR(boxlite_execution_write_stdin(execution, (const uint8_t *)"x\n", 2), BOXLITE_ERROR_INVALID_STATE);
    OK(boxlite_execution_wait(&status, execution));
    CHECK(status.exit_code == 5);
    if (strcmp(ended.out, "done\n") != 0) FAIL("cat without stdin printed %s", ended.out);
    boxlite_execution_free(execution);
    boxlite_command_free(command);

    /* a tty resized while its process runs: the process sees the new size */
    command = sh("read line; stty size");
    OK(boxlite_command_set_tty(command, 24, 80));
    collected_t seen;
    memset(&seen, 0, sizeof seen);
    boxlite_exec_callbacks_t callbacks = {BOXLITE_EXEC_CALLBACKS_VERSION, collect, NULL, NULL, &seen, NULL};
    OK(boxlite_box_exec(&execution, box, command, &callbacks));
    EXPECT_ERROR(boxlite_execution_resize(execution, 0, 100), BOXLITE_ERROR_INVALID_ARGUMENT);
    OK(boxlite_execution_resize(execution, 33, 101));
    OK(boxlite_execution_write_stdin(execution, (const uint8_t *)"go\n", 3));
    OK(boxlite_execution_wait(&status, execution));
    CHECK(status.exit_code == 0);
    if (!strstr(seen.out, "33 101")) FAIL("stty saw %s", seen.out);
    boxlite_execution_free(execution);
    boxlite_command_free(command);

    /* collected output is capped: `yes` stops at the limit, flagged, killed */
    command = sh("yes");
    EXPECT_ERROR(boxlite_command_set_output_limit(command, 0), BOXLITE_ERROR_INVALID_ARGUMENT);
    OK(boxlite_command_set_output_limit(command, 1 << 20));
    boxlite_output_t *output = NULL;
    OK(boxlite_box_run(&output, box, command));
    size_t len = 0;
    const uint8_t *out = boxlite_output_stdout(output, &len);
    CHECK(len == 1 << 20 && out[0] == 'y' && out[1] == '\n');
    uint32_t truncated = 0;
    OK(boxlite_output_truncated(&truncated, output));
    CHECK(truncated == BOXLITE_OUTPUT_STDOUT_TRUNCATED);
    OK(boxlite_output_status(&status, output));
    CHECK(status.signal == 9);
    boxlite_output_free(output);
    boxlite_command_free(command);
    output = run_sh(box, "echo short");
    OK(boxlite_output_truncated(&truncated, output));
    CHECK(truncated == 0);
    boxlite_output_free(output);
    EXPECT_ERROR(boxlite_output_truncated(&truncated, NULL), BOXLITE_ERROR_INVALID_ARGUMENT);

    OK(boxlite_box_remove(box, BOXLITE_REMOVE_FORCE));
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}
