/* Helpers shared by the C API tests: checks that report where they failed, a fresh home
 * directory per test, and the test root disk. */
#ifndef BOXLITE_TEST_COMMON_H
#define BOXLITE_TEST_COMMON_H

#include <boxlite.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...) do { fprintf(stderr, "%s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)
#define CHECK(cond) do { if (!(cond)) FAIL("check failed: %s", #cond); } while (0)

/* Fails the test if `call` returned an error, printing its message. */
#define OK(call) do { boxlite_error_t *err_ = (call); if (err_) { \
    fprintf(stderr, "%s:%d: %s failed (%d): %s\n", __FILE__, __LINE__, #call, \
            (int)boxlite_error_code(err_), boxlite_error_message(err_)); \
    boxlite_error_free(err_); exit(1); } } while (0)

/* Checks that `call` failed with `code` and a non-empty message; frees the error. */
#define EXPECT_ERROR(call, code) do { boxlite_error_t *err_ = (call); \
    if (!err_) FAIL("%s succeeded; expected error %d", #call, (int)(code)); \
    if (boxlite_error_code(err_) != (code)) FAIL("%s: error %d (%s); expected %d", #call, \
        (int)boxlite_error_code(err_), boxlite_error_message(err_), (int)(code)); \
    CHECK(strlen(boxlite_error_message(err_)) > 0); \
    boxlite_error_free(err_); } while (0)

/* A new, empty home directory (each call another; up to 8 per test). */
static inline const char *test_home(void) {
    static char paths[8][32];
    static int used;
    if (used == 8) FAIL("more than 8 test homes");
    char *path = paths[used++];
    strcpy(path, "/tmp/boxlite-ctest-XXXXXX");
    if (!mkdtemp(path)) FAIL("mkdtemp failed");
    return path;
}

/* The busybox root disk built by scripts/build-test-rootfs.sh (BOXLITE_TEST_ROOTFS). */
static inline const char *test_rootfs(void) {
    const char *path = getenv("BOXLITE_TEST_ROOTFS");
    if (!path || !*path) FAIL("BOXLITE_TEST_ROOTFS is not set (scripts/test-c.sh sets it)");
    return path;
}

/* A runtime on `home`, using the qemu engine. */
static inline boxlite_runtime_t *runtime_on(const char *home) {
    boxlite_runtime_options_t *options = NULL;
    boxlite_runtime_t *runtime = NULL;
    OK(boxlite_runtime_options_new(&options));
    OK(boxlite_runtime_options_set_home(options, home));
    OK(boxlite_runtime_options_set_engine(options, BOXLITE_ENGINE_QEMU));
    OK(boxlite_runtime_new(&runtime, options));
    boxlite_runtime_options_free(options);
    return runtime;
}

/* A runtime on a fresh home, using the qemu engine. */
static inline boxlite_runtime_t *test_runtime(void) { return runtime_on(test_home()); }

/* The busybox test image (an OCI layout, BOXLITE_TEST_IMAGE_LAYOUT). */
static inline const char *test_image_layout(void) {
    const char *path = getenv("BOXLITE_TEST_IMAGE_LAYOUT");
    if (!path || !*path) FAIL("BOXLITE_TEST_IMAGE_LAYOUT is not set (scripts/test-c.sh sets it)");
    return path;
}

/* A box on the test root disk (read-only, shareable). */
static inline boxlite_box_t *test_box(boxlite_runtime_t *runtime) {
    boxlite_box_options_t *options = NULL;
    boxlite_box_t *box = NULL;
    OK(boxlite_box_options_new(&options));
    OK(boxlite_box_options_set_root_disk(options, test_rootfs(), BOXLITE_DISK_READ_ONLY));
    OK(boxlite_box_create(&box, runtime, options));
    boxlite_box_options_free(options);
    return box;
}

/* Runs `sh -c script` and returns the output (caller frees). */
static inline boxlite_output_t *run_sh(boxlite_box_t *box, const char *script) {
    boxlite_command_t *command = NULL;
    boxlite_output_t *output = NULL;
    OK(boxlite_command_new(&command, "sh"));
    OK(boxlite_command_add_arg(command, "-c"));
    OK(boxlite_command_add_arg(command, script));
    OK(boxlite_box_run(&output, box, command));
    boxlite_command_free(command);
    return output;
}

/* Whether `output`'s stdout is exactly `expected`. */
static inline int stdout_equals(const boxlite_output_t *output, const char *expected) {
    size_t len = 0;
    const uint8_t *out = boxlite_output_stdout(output, &len);
    return len == strlen(expected) && memcmp(out, expected, len) == 0;
}

#endif
