/* Copies into and out of a box from C: a small tree (a file with its mode, an empty
 * directory, a symlink) goes into the box's /tmp and comes back the same; unknown flag
 * bits and NULL arguments are refused; a missing path in the box is BOXLITE_ERROR_NOT_FOUND
 * with the path in the message; a write to the box's read-only root is BOXLITE_ERROR_IO. */
#include "common.h"
#include <sys/stat.h>
#include <unistd.h>

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) FAIL("fopen %s", path);
    fputs(text, f);
    fclose(f);
}

static void expect_code(boxlite_error_t *error, boxlite_error_code_t code, const char *what, const char *needle) {
    if (!error) FAIL("%s succeeded; expected error %d", what, (int)code);
    const char *message = boxlite_error_message(error);
    if (boxlite_error_code(error) != code) FAIL("%s: error %d (%s); expected %d", what, (int)boxlite_error_code(error), message, (int)code);
    if (needle && !strstr(message, needle)) FAIL("%s: message %s does not name %s", what, message, needle);
    boxlite_error_free(error);
}

int main(void) {
    char dir[] = "/tmp/boxlite-ctest-copy-XXXXXX";
    if (!mkdtemp(dir)) FAIL("mkdtemp");
    char tree[256], path[512], back[256];
    snprintf(tree, sizeof tree, "%s/tree", dir);
    snprintf(back, sizeof back, "%s/back", dir);
    CHECK(mkdir(tree, 0755) == 0);
    snprintf(path, sizeof path, "%s/a.txt", tree);
    write_file(path, "hello from the host\n");
    CHECK(chmod(path, 0640) == 0);
    snprintf(path, sizeof path, "%s/empty", tree);
    CHECK(mkdir(path, 0700) == 0);
    snprintf(path, sizeof path, "%s/link", tree);
    CHECK(symlink("a.txt", path) == 0);

    boxlite_runtime_t *runtime = test_runtime();
    boxlite_box_options_t *options = NULL;
    boxlite_box_t *box = NULL;
    OK(boxlite_box_options_new(&options));
    OK(boxlite_box_options_set_root_disk(options, test_rootfs(), BOXLITE_DISK_READ_ONLY));
    OK(boxlite_box_create(&box, runtime, options));
    boxlite_box_options_free(options);

    /* refused before anything runs */
    expect_code(boxlite_box_copy_in(box, tree, "/tmp", 1), BOXLITE_ERROR_INVALID_ARGUMENT, "flags 1", "flag");
    expect_code(boxlite_box_copy_in(NULL, tree, "/tmp", 0), BOXLITE_ERROR_INVALID_ARGUMENT, "NULL box", "box");
    expect_code(boxlite_box_copy_in(box, NULL, "/tmp", 0), BOXLITE_ERROR_INVALID_ARGUMENT, "NULL host_src", "host_src");
    expect_code(boxlite_box_copy_out(box, "/tmp", NULL, 0), BOXLITE_ERROR_INVALID_ARGUMENT, "NULL host_dest", "host_dest");

    /* in (the box is started for it: /tmp is its tmpfs), then out to a new name */
    OK(boxlite_box_copy_in(box, tree, "/tmp", 0));
    OK(boxlite_box_copy_out(box, "/tmp/tree", back, 0));
    struct stat st;
    snprintf(path, sizeof path, "%s/a.txt", back);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0640 && st.st_size == 20);
    snprintf(path, sizeof path, "%s/empty", back);
    CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700);
    snprintf(path, sizeof path, "%s/link", back);
    char target[64] = {0};
    CHECK(lstat(path, &st) == 0 && S_ISLNK(st.st_mode));
    CHECK(readlink(path, target, sizeof target - 1) == 5 && strcmp(target, "a.txt") == 0);

    /* errors name the path and the cause */
    expect_code(boxlite_box_copy_out(box, "/no/such/file", back, 0), BOXLITE_ERROR_NOT_FOUND, "missing source", "/no/such/file");
    expect_code(boxlite_box_copy_in(box, tree, "/etc", 0), BOXLITE_ERROR_IO, "read-only root", "/etc");

    OK(boxlite_box_remove(box, BOXLITE_REMOVE_FORCE));
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    char cleanup[600];
    snprintf(cleanup, sizeof cleanup, "rm -rf '%s'", dir);
    if (system(cleanup) != 0) FAIL("%s", cleanup);
    return 0;
}
