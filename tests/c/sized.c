/* Structs the library writes into caller memory carry their size first: a caller compiled
 * against an older, smaller struct gets exactly its size written (AddressSanitizer catches
 * one byte more: the buffers are malloc'd at that size), the guard bytes after it stay
 * intact, and a size left at 0 is an error that says what to do. */
#include "common.h"

/* What an older header could have declared: the size and the first field only. */
typedef struct { uint32_t size; uint64_t boots; } older_box_metrics_t;
typedef struct { uint32_t size; int32_t exit_code; } older_exit_status_t;
typedef struct { uint32_t size; uint64_t boxes_created; } older_runtime_metrics_t;

/* A buffer of `size` bytes followed by 32 guard bytes of 0xA5. */
static unsigned char *guarded(size_t size) {
    unsigned char *buffer = malloc(size + 32);
    CHECK(buffer != NULL);
    memset(buffer, 0xA5, size + 32);
    return buffer;
}
static void check_guard(const unsigned char *buffer, size_t size) {
    for (size_t i = size; i < size + 32; i++)
        if (buffer[i] != 0xA5) FAIL("byte %zu past a %zu-byte struct was written", i - size, size);
}

int main(void) {
    boxlite_runtime_t *runtime = test_runtime();
    boxlite_box_t *box = test_box(runtime);

    /* exact-size allocations: ASan reports any write past them */
    older_box_metrics_t *old_metrics = malloc(sizeof *old_metrics);
    old_metrics->size = sizeof *old_metrics;
    old_metrics->boots = 12345;
    OK(boxlite_box_metrics((boxlite_box_metrics_t *)old_metrics, box));
    CHECK(old_metrics->size == sizeof *old_metrics && old_metrics->boots == 0);
    free(old_metrics);

    unsigned char *buffer = guarded(sizeof(older_runtime_metrics_t));
    ((older_runtime_metrics_t *)buffer)->size = sizeof(older_runtime_metrics_t);
    OK(boxlite_runtime_metrics((boxlite_runtime_metrics_t *)buffer, runtime));
    CHECK(((older_runtime_metrics_t *)buffer)->boxes_created == 1);
    check_guard(buffer, sizeof(older_runtime_metrics_t));
    free(buffer);

    /* a size too small for the size field itself, or never set */
    boxlite_box_metrics_t unset;
    memset(&unset, 0, sizeof unset);
    EXPECT_ERROR(boxlite_box_metrics(&unset, box), BOXLITE_ERROR_INVALID_ARGUMENT);
    boxlite_error_t *error = boxlite_box_metrics(&unset, box);
    CHECK(strstr(boxlite_error_message(error), "sizeof") != NULL);
    boxlite_error_free(error);

    /* a newer caller (a bigger struct): the library writes its own size, no more */
    buffer = guarded(sizeof(boxlite_box_metrics_t) + 16);
    ((boxlite_box_metrics_t *)buffer)->size = sizeof(boxlite_box_metrics_t) + 16;
    OK(boxlite_box_metrics((boxlite_box_metrics_t *)buffer, box));
    check_guard(buffer, sizeof(boxlite_box_metrics_t));
    free(buffer);

    /* an exit status through wait, into an older struct */
    boxlite_command_t *command = NULL;
    boxlite_execution_t *execution = NULL;
    OK(boxlite_command_new(&command, "sh"));
    OK(boxlite_command_add_arg(command, "-c"));
    OK(boxlite_command_add_arg(command, "exit 42"));
    OK(boxlite_box_exec(&execution, box, command, NULL));
    buffer = guarded(sizeof(older_exit_status_t));
    ((older_exit_status_t *)buffer)->size = sizeof(older_exit_status_t);
    OK(boxlite_execution_wait((boxlite_exit_status_t *)buffer, execution));
    CHECK(((older_exit_status_t *)buffer)->exit_code == 42);
    check_guard(buffer, sizeof(older_exit_status_t));
    free(buffer);
    older_exit_status_t *exact = malloc(sizeof *exact);
    exact->size = sizeof *exact;
    OK(boxlite_execution_wait((boxlite_exit_status_t *)exact, execution));
    CHECK(exact->exit_code == 42);
    free(exact);
    boxlite_execution_free(execution);
    boxlite_command_free(command);

    OK(boxlite_box_remove(box, BOXLITE_REMOVE_FORCE));
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}
