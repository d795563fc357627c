/* Images from C: import an OCI layout, run a box of it (its WorkingDir and Env apply), and
 * refuse to remove an image a box uses. */
#include "common.h"
#include <unistd.h>

static boxlite_output_t *run(boxlite_box_t *box, const char *program, const char *arg1, const char *arg2) {
    boxlite_command_t *command = NULL;
    boxlite_output_t *output = NULL;
    OK(boxlite_command_new(&command, program));
    if (arg1) OK(boxlite_command_add_arg(command, arg1));
    if (arg2) OK(boxlite_command_add_arg(command, arg2));
    OK(boxlite_box_run(&output, box, command));
    boxlite_command_free(command);
    return output;
}

static int stdout_is(boxlite_output_t *output, const char *expected) {
    size_t len = 0;
    const uint8_t *out = boxlite_output_stdout(output, &len);
    return len == strlen(expected) && memcmp(out, expected, len) == 0;
}

int main(void) {
    const char *layout = getenv("BOXLITE_TEST_IMAGE_LAYOUT");
    if (!layout || !*layout) FAIL("BOXLITE_TEST_IMAGE_LAYOUT is not set");
    const char *name = "localhost/boxlite/busybox:latest";
    boxlite_runtime_t *runtime = test_runtime();
    EXPECT_ERROR(boxlite_runtime_import_image(NULL, runtime, "/no/such/layout", NULL, name), BOXLITE_ERROR_IMAGE);
    EXPECT_ERROR(boxlite_runtime_import_image(NULL, runtime, layout, "no-such-tag", name), BOXLITE_ERROR_NOT_FOUND);
    char *digest = NULL;
    OK(boxlite_runtime_import_image(&digest, runtime, layout, "latest", name));
    CHECK(digest != NULL && strncmp(digest, "sha256:", 7) == 0 && strlen(digest) == 71);

    /* the same image from an archive (a tar of the layout), under a second name */
    char archive[] = "/tmp/boxlite-ctest-archive-XXXXXX";
    int fd = mkstemp(archive);
    CHECK(fd >= 0);
    close(fd);
    char tar[1024];
    snprintf(tar, sizeof tar, "tar -C '%s' -cf '%s' .", layout, archive);
    CHECK(system(tar) == 0);
    char *archived = NULL;
    EXPECT_ERROR(boxlite_runtime_import_image_archive(&archived, runtime, "/no/such.tar", NULL, "x"), BOXLITE_ERROR_IO);
    CHECK(archived == NULL);
    OK(boxlite_runtime_import_image_archive(&archived, runtime, archive, "latest", "localhost/boxlite/from-archive:1"));
    CHECK(strcmp(archived, digest) == 0);
    boxlite_string_free(archived);
    unlink(archive);

    /* both are listed, ordered by reference, with digest and size */
    boxlite_image_list_t *images = NULL;
    OK(boxlite_runtime_list_images(&images, runtime));
    size_t count = 0;
    OK(boxlite_image_list_len(&count, images));
    CHECK(count == 2);
    const char *reference = NULL, *listed_digest = NULL;
    uint64_t size = 0;
    OK(boxlite_image_list_get(&reference, &listed_digest, &size, images, 0));
    CHECK(strcmp(reference, "localhost/boxlite/busybox:latest") == 0 && strcmp(listed_digest, digest) == 0 && size > 100000);
    OK(boxlite_image_list_get(&reference, NULL, NULL, images, 1));
    CHECK(strcmp(reference, "localhost/boxlite/from-archive:1") == 0);
    EXPECT_ERROR(boxlite_image_list_get(&reference, NULL, NULL, images, 2), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_image_list_free(images);
    OK(boxlite_runtime_remove_image(runtime, "localhost/boxlite/from-archive:1", 0));

    boxlite_box_options_t *options = NULL;
    boxlite_box_t *box = NULL;
    OK(boxlite_box_options_new(&options));
    OK(boxlite_box_options_set_image(options, "Not A Reference!"));
    EXPECT_ERROR(boxlite_box_create(&box, runtime, options), BOXLITE_ERROR_INVALID_ARGUMENT);
    OK(boxlite_box_options_set_image(options, name));
    OK(boxlite_box_options_set_disk_size_gib(options, 0));
    EXPECT_ERROR(boxlite_box_create(&box, runtime, options), BOXLITE_ERROR_INVALID_ARGUMENT);
    OK(boxlite_box_options_set_disk_size_gib(options, 4));
    OK(boxlite_box_create(&box, runtime, options));
    boxlite_box_options_free(options);

    boxlite_output_t *output = run(box, "pwd", NULL, NULL);
    CHECK(stdout_is(output, "/srv\n"));
    boxlite_output_free(output);
    output = run(box, "sh", "-c", "echo $BOXLITE_IMAGE");
    CHECK(stdout_is(output, "busybox\n"));
    boxlite_output_free(output);

    boxlite_box_metrics_t box_metrics = BOXLITE_BOX_METRICS_INIT;
    OK(boxlite_box_metrics(&box_metrics, box));
    CHECK(box_metrics.boots == 1 && box_metrics.executions_started == 2 && box_metrics.bytes_out >= 13);
    CHECK(box_metrics.last_boot_ms > 0);
    boxlite_box_status_t status = 0;
    OK(boxlite_box_status(&status, box));
    CHECK(status == BOXLITE_BOX_RUNNING);
    boxlite_runtime_metrics_t metrics = BOXLITE_RUNTIME_METRICS_INIT;
    OK(boxlite_runtime_metrics(&metrics, runtime));
    CHECK(metrics.boxes_created == 1 && metrics.boxes_running == 1 && metrics.executions == 2);
    EXPECT_ERROR(boxlite_box_metrics(NULL, box), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_guest_stats_t guest = BOXLITE_GUEST_STATS_INIT;
    OK(boxlite_box_guest_stats(&guest, box));
    CHECK(guest.memory_total_kib > 100000 && guest.memory_available_kib < guest.memory_total_kib && guest.uptime_us > 0);

    EXPECT_ERROR(boxlite_runtime_remove_image(runtime, name, 0), BOXLITE_ERROR_INVALID_STATE);
    OK(boxlite_box_remove(box, BOXLITE_REMOVE_FORCE));
    OK(boxlite_box_status(&status, box));
    CHECK(status == BOXLITE_BOX_REMOVED);
    OK(boxlite_runtime_remove_image(runtime, name, 0));
    EXPECT_ERROR(boxlite_runtime_remove_image(runtime, name, 0), BOXLITE_ERROR_NOT_FOUND);
    EXPECT_ERROR(boxlite_runtime_pull_image(NULL, runtime, NULL, NULL, NULL), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_string_free(digest);

    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}
