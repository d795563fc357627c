/* Error paths: NULL everywhere, bad options rejected at create, distinct exec errors, a
 * locked home, *_free(NULL), and the freed-then-NULL handle pattern. */
#include "common.h"

int main(void) {
    /* NULL out-parameters and handles are errors, never crashes. */
    EXPECT_ERROR(boxlite_runtime_new(NULL, NULL), BOXLITE_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(boxlite_runtime_options_set_home(NULL, "/tmp"), BOXLITE_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(boxlite_box_start(NULL), BOXLITE_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(boxlite_box_run(NULL, NULL, NULL), BOXLITE_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(boxlite_command_new(NULL, "x"), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_command_t *command = NULL;
    EXPECT_ERROR(boxlite_command_new(&command, NULL), BOXLITE_ERROR_INVALID_ARGUMENT);
    CHECK(command == NULL); /* out-parameters are untouched on failure */
    EXPECT_ERROR(boxlite_execution_kill(NULL), BOXLITE_ERROR_INVALID_ARGUMENT);
    CHECK(boxlite_box_id(NULL) == NULL);
    /* NULL handles are errors, never a made-up status. */
    boxlite_box_status_t box_status = 77;
    EXPECT_ERROR(boxlite_box_status(&box_status, NULL), BOXLITE_ERROR_INVALID_ARGUMENT);
    CHECK(box_status == 77);
    boxlite_exit_status_t exit_status = BOXLITE_EXIT_STATUS_INIT;
    EXPECT_ERROR(boxlite_output_status(&exit_status, NULL), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_box_options_t *flag_options = NULL;
    OK(boxlite_box_options_new(&flag_options));
    EXPECT_ERROR(boxlite_box_options_set_root_disk(flag_options, "/x.ext4", 0x10), BOXLITE_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(boxlite_box_options_add_volume(flag_options, "/tmp", "/data", 0x10), BOXLITE_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(boxlite_box_options_add_volume(flag_options, NULL, "/data", 0), BOXLITE_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(boxlite_box_options_add_volume(flag_options, "/tmp", NULL, 0), BOXLITE_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(boxlite_box_options_add_volume(NULL, "/tmp", "/data", BOXLITE_VOLUME_READ_ONLY), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_box_options_free(flag_options);
    CHECK(boxlite_version_number() == BOXLITE_VERSION_NUMBER);
    CHECK(BOXLITE_VERSION_NUMBER == BOXLITE_VERSION_MAJOR * 1000000 + BOXLITE_VERSION_MINOR * 1000 + BOXLITE_VERSION_PATCH);
    CHECK(boxlite_error_code(NULL) == BOXLITE_ERROR_INVALID_ARGUMENT);
    CHECK(strlen(boxlite_error_message(NULL)) > 0);

    /* *_free(NULL) does nothing. */
    boxlite_runtime_free(NULL);
    boxlite_runtime_options_free(NULL);
    boxlite_box_free(NULL);
    boxlite_box_options_free(NULL);
    boxlite_command_free(NULL);
    boxlite_execution_free(NULL);
    boxlite_output_free(NULL);
    boxlite_error_free(NULL);

    /* Unknown enum values are rejected, not ignored. */
    boxlite_runtime_options_t *runtime_options = NULL;
    OK(boxlite_runtime_options_new(&runtime_options));
    EXPECT_ERROR(boxlite_runtime_options_set_engine(runtime_options, 77), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_runtime_options_free(runtime_options);

    boxlite_runtime_t *runtime = test_runtime();

    /* A second runtime on the same home: refused at once, naming the holder. */
    boxlite_runtime_options_t *same_home = NULL;
    boxlite_runtime_t *second = NULL;
    OK(boxlite_runtime_options_new(&same_home));
    OK(boxlite_runtime_options_set_home(same_home, boxlite_runtime_home(runtime)));
    boxlite_error_t *locked = boxlite_runtime_new(&second, same_home);
    CHECK(locked && boxlite_error_code(locked) == BOXLITE_ERROR_HOME_LOCKED && second == NULL);
    CHECK(strstr(boxlite_error_message(locked), "pid") != NULL);
    boxlite_error_free(locked);
    boxlite_runtime_options_free(same_home);

    /* Bad box options fail at create, each with its own message. */
    boxlite_box_options_t *options = NULL;
    boxlite_box_t *box = NULL;
    OK(boxlite_box_options_new(&options));
    OK(boxlite_box_options_set_cpus(options, 0));
    EXPECT_ERROR(boxlite_box_create(&box, runtime, options), BOXLITE_ERROR_INVALID_ARGUMENT);
    OK(boxlite_box_options_set_cpus(options, 1));
    OK(boxlite_box_options_set_memory_mib(options, 1));
    EXPECT_ERROR(boxlite_box_create(&box, runtime, options), BOXLITE_ERROR_INVALID_ARGUMENT);
    OK(boxlite_box_options_set_memory_mib(options, 256));
    OK(boxlite_box_options_set_root_disk(options, "/no/such/disk.ext4", BOXLITE_DISK_READ_ONLY));
    EXPECT_ERROR(boxlite_box_create(&box, runtime, options), BOXLITE_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(boxlite_box_options_set_detached(NULL, true), BOXLITE_ERROR_INVALID_ARGUMENT);
    OK(boxlite_box_options_set_detached(options, false));
    OK(boxlite_box_options_set_name(options, "bad name!"));
    EXPECT_ERROR(boxlite_box_create(&box, runtime, options), BOXLITE_ERROR_INVALID_ARGUMENT);
    CHECK(box == NULL);
    boxlite_box_options_free(options);
    /* Volumes are checked at create: a host path that does not exist, and the runtime's home. */
    OK(boxlite_box_options_new(&options));
    OK(boxlite_box_options_add_volume(options, "/no/such/dir", "/data", 0));
    EXPECT_ERROR(boxlite_box_create(&box, runtime, options), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_box_options_free(options);
    OK(boxlite_box_options_new(&options));
    OK(boxlite_box_options_add_volume(options, boxlite_runtime_home(runtime), "/data", BOXLITE_VOLUME_READ_ONLY));
    EXPECT_ERROR(boxlite_box_create(&box, runtime, options), BOXLITE_ERROR_INVALID_ARGUMENT);
    CHECK(box == NULL);
    boxlite_box_options_free(options);

    /* Exec errors are distinct codes, not exit 127. */
    box = test_box(runtime);
    boxlite_output_t *output = NULL;
    OK(boxlite_command_new(&command, "no-such-program"));
    EXPECT_ERROR(boxlite_box_run(&output, box, command), BOXLITE_ERROR_PROGRAM_NOT_FOUND);
    boxlite_command_free(command);
    OK(boxlite_command_new(&command, "pwd"));
    OK(boxlite_command_set_working_dir(command, "/no/such/dir"));
    EXPECT_ERROR(boxlite_box_run(&output, box, command), BOXLITE_ERROR_WORKING_DIR_NOT_FOUND);
    OK(boxlite_command_set_working_dir(command, "/"));
    OK(boxlite_command_set_user(command, "nobody-such"));
    EXPECT_ERROR(boxlite_box_run(&output, box, command), BOXLITE_ERROR_USER_NOT_FOUND);
    EXPECT_ERROR(boxlite_command_set_env(command, "A=B", "c"), BOXLITE_ERROR_INVALID_ARGUMENT);
    CHECK(output == NULL);
    boxlite_command_free(command);

    /* A running box is not removed without force. */
    OK(boxlite_box_start(box));
    EXPECT_ERROR(boxlite_box_remove(box, 0), BOXLITE_ERROR_INVALID_STATE);
    EXPECT_ERROR(boxlite_box_remove(box, 0x80), BOXLITE_ERROR_INVALID_ARGUMENT); /* unknown flag bits */
    OK(boxlite_box_remove(box, BOXLITE_REMOVE_FORCE));
    EXPECT_ERROR(boxlite_box_start(box), BOXLITE_ERROR_INVALID_STATE);

    /* Freed, then set to NULL: using it is an error, not a crash. */
    boxlite_box_free(box);
    box = NULL;
    EXPECT_ERROR(boxlite_box_start(box), BOXLITE_ERROR_INVALID_ARGUMENT);

    boxlite_runtime_free(runtime);
    return 0;
}
