/* Binding overhead benchmark, the C baseline (scripts/bench-bindings.sh): warm exec round
 * trips of `true` and 64 MiB streamed through the stdout callback, on one box of the
 * busybox read-only root disk (qemu engine). Prints one JSON line.
 * Usage: exec_c HOME ROOTFS [N] */
#include <boxlite.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STREAM_BYTES 67108864ULL

#define OK(call) do { boxlite_error_t *err_ = (call); if (err_) { \
    fprintf(stderr, "exec_c: %s failed (%d): %s\n", #call, \
            (int)boxlite_error_code(err_), boxlite_error_message(err_)); \
    boxlite_error_free(err_); exit(1); } } while (0)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples (the same rule in every language). */
static double percentile(const double *sorted, int n, double p) {
    int rank = (int)((p / 100.0) * n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

static int count_bytes(const uint8_t *data, size_t len, void *user_data) {
    (void)data;
    *(uint64_t *)user_data += len;
    return 0;
}

/* Runs argv to its end, output through callbacks counting stdout; returns the exit code. */
static int run(boxlite_box_t *box, const char *const *argv, uint64_t *counted) {
    boxlite_command_t *command = NULL;
    OK(boxlite_command_new(&command, argv[0]));
    for (int i = 1; argv[i]; i++) OK(boxlite_command_add_arg(command, argv[i]));
    OK(boxlite_command_set_no_stdin(command)); /* as the bindings' exec without input */
    boxlite_exec_callbacks_t callbacks = {BOXLITE_EXEC_CALLBACKS_VERSION, count_bytes, NULL, NULL, counted, NULL};
    boxlite_execution_t *execution = NULL;
    OK(boxlite_box_exec(&execution, box, command, &callbacks));
    boxlite_exit_status_t status = BOXLITE_EXIT_STATUS_INIT;
    OK(boxlite_execution_wait(&status, execution));
    boxlite_execution_free(execution);
    boxlite_command_free(command);
    return status.exit_code;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s HOME ROOTFS [N]\n", argv[0]); return 2; }
    int n = argc > 3 ? atoi(argv[3]) : 100;
    if (n < 1) n = 1;

    boxlite_runtime_options_t *ropts = NULL;
    boxlite_runtime_t *runtime = NULL;
    OK(boxlite_runtime_options_new(&ropts));
    OK(boxlite_runtime_options_set_home(ropts, argv[1]));
    OK(boxlite_runtime_options_set_engine(ropts, BOXLITE_ENGINE_QEMU));
    OK(boxlite_runtime_new(&runtime, ropts));
    boxlite_runtime_options_free(ropts);

    boxlite_box_options_t *bopts = NULL;
    boxlite_box_t *box = NULL;
    OK(boxlite_box_options_new(&bopts));
    OK(boxlite_box_options_set_root_disk(bopts, argv[2], BOXLITE_DISK_READ_ONLY));
    OK(boxlite_box_create(&box, runtime, bopts));
    boxlite_box_options_free(bopts);

    static const char *const true_argv[] = {"true", NULL};
    static const char *const stream_argv[] = {"head", "-c", "67108864", "/dev/zero", NULL};
    uint64_t ignored = 0;
    for (int i = 0; i < 5; i++) /* warm up: boots the box, fills the guest's caches */
        if (run(box, true_argv, &ignored) != 0) { fprintf(stderr, "exec_c: true failed\n"); return 1; }

    double *samples = calloc((size_t)n, sizeof *samples);
    for (int i = 0; i < n; i++) {
        double t0 = now_ms();
        int code = run(box, true_argv, &ignored);
        samples[i] = now_ms() - t0;
        if (code != 0) { fprintf(stderr, "exec_c: true exited %d\n", code); return 1; }
    }
    qsort(samples, (size_t)n, sizeof *samples, cmp_double);

    uint64_t streamed = 0;
    double t0 = now_ms();
    int code = run(box, stream_argv, &streamed);
    double stream_s = (now_ms() - t0) / 1e3;
    if (code != 0 || streamed != STREAM_BYTES) {
        fprintf(stderr, "exec_c: stream exited %d with %llu bytes\n", code, (unsigned long long)streamed);
        return 1;
    }

    printf("{\"lang\":\"c\",\"n\":%d,\"true_p50_ms\":%.3f,\"true_p99_ms\":%.3f,\"stream_mb_s\":%.2f}\n",
           n, percentile(samples, n, 50), percentile(samples, n, 99), (double)streamed / 1e6 / stream_s);
    free(samples);
    OK(boxlite_box_stop(box));
    OK(boxlite_box_remove(box, BOXLITE_REMOVE_FORCE));
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}
