/* Boxes that last, from C: one process creates a named box and writes a file in it; a second
 * process opens the same home, finds the box by name and by listing, reads its name, image,
 * status and creation time, restarts it and reads the file. Then a detached box: one process
 * starts it and exits; the next finds it still running (the same VM: a file in its tmpfs is
 * still there) and uses it. Each step runs as its own process (this program, re-executed).
 * Last, a box whose record is corrupted on disk: listed apart as invalid, with the reason and
 * where it was moved, its disk still there. */
#include "common.h"
#include <sys/wait.h>
#include <unistd.h>

static const char *IMAGE = "localhost/boxlite/busybox:latest";

static boxlite_box_t *create_named(boxlite_runtime_t *runtime, const char *name, int detached) {
    boxlite_box_options_t *options = NULL;
    boxlite_box_t *box = NULL;
    OK(boxlite_box_options_new(&options));
    OK(boxlite_box_options_set_name(options, name));
    OK(boxlite_box_options_set_image(options, IMAGE));
    OK(boxlite_box_options_set_detached(options, detached));
    OK(boxlite_box_create(&box, runtime, options));
    boxlite_box_options_free(options);
    return box;
}

static boxlite_box_status_t status_of(const boxlite_box_t *box) {
    boxlite_box_status_t status = 99;
    OK(boxlite_box_status(&status, box));
    return status;
}

/* Process 1: create "keeper", write a file on its disk, stop it. */
static int create_step(const char *home) {
    boxlite_runtime_t *runtime = runtime_on(home);
    OK(boxlite_runtime_import_image(NULL, runtime, test_image_layout(), "latest", IMAGE));
    boxlite_box_t *box = create_named(runtime, "keeper", 0);
    boxlite_output_free(run_sh(box, "echo kept > /root/note && sync"));
    OK(boxlite_box_stop(box));
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}

/* Process 2: find "keeper" by name and by listing, restart it, read the file. */
static int find_step(const char *home) {
    boxlite_runtime_t *runtime = runtime_on(home);
    boxlite_box_t *box = NULL;
    EXPECT_ERROR(boxlite_runtime_get_box(&box, runtime, "no-such-box"), BOXLITE_ERROR_NOT_FOUND);
    CHECK(box == NULL);
    OK(boxlite_runtime_get_box(&box, runtime, "keeper"));
    CHECK(strcmp(boxlite_box_name(box), "keeper") == 0);
    CHECK(strcmp(boxlite_box_image(box), IMAGE) == 0);
    CHECK(status_of(box) == BOXLITE_BOX_STOPPED);
    uint64_t created_ms = 0;
    OK(boxlite_box_created_at(&created_ms, box));
    CHECK(created_ms > 1700000000000ull); /* after 2023: a real clock reading */
    char *reason = (char *)"unset";
    OK(boxlite_box_stop_reason(&reason, box));
    CHECK(reason == NULL); /* stopped on request */

    /* by id, and in the list: the same box */
    boxlite_box_t *by_id = NULL;
    OK(boxlite_runtime_get_box(&by_id, runtime, boxlite_box_id(box)));
    CHECK(strcmp(boxlite_box_id(by_id), boxlite_box_id(box)) == 0);
    boxlite_box_free(by_id);
    boxlite_box_list_t *list = NULL;
    OK(boxlite_runtime_list_boxes(&list, runtime));
    size_t len = 0;
    OK(boxlite_box_list_len(&len, list));
    CHECK(len == 1);
    boxlite_box_t *listed = NULL;
    OK(boxlite_box_list_get(&listed, list, 0));
    CHECK(strcmp(boxlite_box_id(listed), boxlite_box_id(box)) == 0);
    EXPECT_ERROR(boxlite_box_list_get(&listed, list, 1), BOXLITE_ERROR_INVALID_ARGUMENT);
    size_t invalid = 99;
    OK(boxlite_box_list_invalid_len(&invalid, list));
    CHECK(invalid == 0);
    boxlite_box_list_free(list);
    boxlite_box_free(listed);

    OK(boxlite_box_restart(box));
    CHECK(status_of(box) == BOXLITE_BOX_RUNNING);
    OK(boxlite_box_restart(box)); /* restart of a running box: stop, then start */
    boxlite_output_t *output = run_sh(box, "cat /root/note");
    if (!stdout_equals(output, "kept\n")) FAIL("the file did not last");
    boxlite_output_free(output);
    boxlite_box_metrics_t metrics = BOXLITE_BOX_METRICS_INIT;
    OK(boxlite_box_metrics(&metrics, box));
    CHECK(metrics.boots == 2);
    OK(boxlite_box_remove(box, BOXLITE_REMOVE_FORCE));
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}

/* Process 3: start a detached box, leave a mark in its memory (tmpfs), exit running. */
static int detach_step(const char *home) {
    boxlite_runtime_t *runtime = runtime_on(home);
    boxlite_box_t *box = create_named(runtime, "runner", 1);
    boxlite_output_free(run_sh(box, "mkdir -p /run/mark && mount -t tmpfs none /run/mark && echo same-vm > /run/mark/here"));
    CHECK(status_of(box) == BOXLITE_BOX_RUNNING);
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}

/* Process 4: the detached box is found running, the same VM, and usable. */
static int attach_step(const char *home) {
    boxlite_runtime_t *runtime = runtime_on(home);
    boxlite_box_t *box = NULL;
    OK(boxlite_runtime_get_box(&box, runtime, "runner"));
    CHECK(status_of(box) == BOXLITE_BOX_RUNNING);
    boxlite_output_t *output = run_sh(box, "cat /run/mark/here");
    if (!stdout_equals(output, "same-vm\n")) FAIL("the detached VM was not the one left running");
    boxlite_output_free(output);
    OK(boxlite_box_remove(box, BOXLITE_REMOVE_FORCE));
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}

/* A box whose config.json is garbage: the next runtime lists it as invalid, never deletes it. */
static void invalid_record(void) {
    const char *home = test_home();
    boxlite_runtime_t *runtime = runtime_on(home);
    boxlite_box_t *box = test_box(runtime);
    char id[64], path[512];
    snprintf(id, sizeof id, "%s", boxlite_box_id(box));
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    snprintf(path, sizeof path, "%s/boxes/%s/config.json", home, id);
    FILE *record = fopen(path, "w");
    CHECK(record && fputs("{ not json", record) >= 0 && fclose(record) == 0);
    snprintf(path, sizeof path, "%s/boxes/%s/disk.qcow2", home, id);
    FILE *disk = fopen(path, "w");
    CHECK(disk && fputs("the user's data", disk) >= 0 && fclose(disk) == 0);

    runtime = runtime_on(home);
    boxlite_box_list_t *list = NULL;
    OK(boxlite_runtime_list_boxes(&list, runtime));
    size_t len = 99, invalid = 0;
    OK(boxlite_box_list_len(&len, list));
    OK(boxlite_box_list_invalid_len(&invalid, list));
    CHECK(len == 0 && invalid == 1);
    const char *invalid_id = NULL, *reason = NULL, *dir = NULL;
    OK(boxlite_box_list_invalid_get(&invalid_id, &reason, &dir, list, 0));
    CHECK(strcmp(invalid_id, id) == 0);
    if (!strstr(reason, "config.json")) FAIL("the reason does not name the record: %s", reason);
    snprintf(path, sizeof path, "%s/disk.qcow2", dir);
    FILE *kept = fopen(path, "r");
    if (!kept) FAIL("the disk is gone from %s", dir);
    fclose(kept);
    EXPECT_ERROR(boxlite_box_list_invalid_get(NULL, NULL, NULL, list, 1), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_box_list_free(list);
    boxlite_runtime_free(runtime);
}

static void run_step(const char *self, const char *step, const char *home) {
    pid_t pid = fork();
    if (pid < 0) FAIL("fork failed");
    if (pid == 0) {
        execl("/proc/self/exe", self, step, home, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("step %s failed (wait status %d)", step, status);
}

int main(int argc, char **argv) {
    if (argc == 3) {
        if (strcmp(argv[1], "create") == 0) return create_step(argv[2]);
        if (strcmp(argv[1], "find") == 0) return find_step(argv[2]);
        if (strcmp(argv[1], "detach") == 0) return detach_step(argv[2]);
        if (strcmp(argv[1], "attach") == 0) return attach_step(argv[2]);
        FAIL("unknown step %s", argv[1]);
    }
    const char *home = test_home();
    run_step(argv[0], "create", home);
    run_step(argv[0], "find", home);
    run_step(argv[0], "detach", home);
    run_step(argv[0], "attach", home);
    invalid_record();
    return 0;
}
