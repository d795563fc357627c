/* The example of docs/c-api.md: run a command in a box and print its output. */
#include <boxlite.h>
#include <stdio.h>
#include <stdlib.h>

static int fail(boxlite_error_t *error) {
    fprintf(stderr, "boxlite error %d: %s\n", (int)boxlite_error_code(error), boxlite_error_message(error));
    boxlite_error_free(error);
    return 1;
}

int main(void) {
    const char *rootfs = getenv("BOXLITE_TEST_ROOTFS"); /* an ext4 image with a userland */
    boxlite_runtime_t *runtime = NULL;
    boxlite_box_options_t *options = NULL;
    boxlite_box_t *box = NULL;
    boxlite_command_t *command = NULL;
    boxlite_output_t *output = NULL;
    boxlite_error_t *error;

    printf("boxlite %s (header %d.%d.%d)\n", boxlite_version(),
           BOXLITE_VERSION_MAJOR, BOXLITE_VERSION_MINOR, BOXLITE_VERSION_PATCH);
    if ((error = boxlite_runtime_new(&runtime, NULL))) return fail(error); /* ~/.boxlite or $BOXLITE_HOME */
    if ((error = boxlite_box_options_new(&options))) return fail(error);
    if ((error = boxlite_box_options_set_root_disk(options, rootfs, BOXLITE_DISK_READ_ONLY))) return fail(error);
    if ((error = boxlite_box_create(&box, runtime, options))) return fail(error);
    boxlite_box_options_free(options);

    if ((error = boxlite_command_new(&command, "echo"))) return fail(error);
    if ((error = boxlite_command_add_arg(command, "hello from a box"))) return fail(error);
    if ((error = boxlite_box_run(&output, box, command))) return fail(error); /* boots the box */

    size_t len = 0;
    const uint8_t *out = boxlite_output_stdout(output, &len);
    boxlite_exit_status_t status = BOXLITE_EXIT_STATUS_INIT;
    if ((error = boxlite_output_status(&status, output))) return fail(error);
    printf("exit %d, stdout: %.*s", status.exit_code, (int)len, (const char *)out);
    int ok = status.exit_code == 0 && len == 17;

    boxlite_output_free(output);
    boxlite_command_free(command);
    if ((error = boxlite_box_remove(box, BOXLITE_REMOVE_FORCE))) return fail(error); /* stops it first */
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return ok ? 0 : 1;
}
