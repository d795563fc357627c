/* Pulls from a real registry on loopback (scripts/test-c.sh starts docker-registry and sets
 * BOXLITE_TEST_REGISTRY): the pull returns the digest it resolved; its progress callback
 * runs on the calling thread and may call back into the library (here a blocking call);
 * a non-zero return cancels the pull. */
#include "common.h"
#include <pthread.h>

typedef struct {
    pthread_t caller;
    boxlite_box_t *box;
    int reports, wrong_thread, reentry_failed;
    int cancel;
} progress_t;

static int on_progress(const char *digest, uint64_t done, uint64_t total, void *user_data) {
    progress_t *p = user_data;
    CHECK(strncmp(digest, "sha256:", 7) == 0 && done <= total);
    p->reports++;
    if (!pthread_equal(pthread_self(), p->caller)) p->wrong_thread++;
    /* a blocking call into the library from inside the callback */
    boxlite_error_t *error = boxlite_box_stop(p->box);
    if (error) {
        fprintf(stderr, "stop from the progress callback: %s\n", boxlite_error_message(error));
        p->reentry_failed++;
        boxlite_error_free(error);
    }
    return p->cancel;
}

static boxlite_runtime_t *registry_runtime(const char *registry) {
    boxlite_runtime_options_t *options = NULL;
    boxlite_runtime_t *runtime = NULL;
    OK(boxlite_runtime_options_new(&options));
    OK(boxlite_runtime_options_set_home(options, test_home()));
    OK(boxlite_runtime_options_add_insecure_registry(options, registry));
    OK(boxlite_runtime_new(&runtime, options));
    boxlite_runtime_options_free(options);
    return runtime;
}

int main(void) {
    const char *registry = getenv("BOXLITE_TEST_REGISTRY");
    if (!registry || !*registry) FAIL("BOXLITE_TEST_REGISTRY is not set (scripts/test-c.sh starts a registry and sets it)");
    char reference[256];
    snprintf(reference, sizeof reference, "%s/boxlite/busybox:latest", registry);

    /* cancelled at the first report: nothing is cached, the error says so */
    boxlite_runtime_t *runtime = registry_runtime(registry);
    progress_t progress = {pthread_self(), test_box(runtime), 0, 0, 0, 1};
    char *digest = NULL;
    EXPECT_ERROR(boxlite_runtime_pull_image(&digest, runtime, reference, on_progress, &progress), BOXLITE_ERROR_CANCELLED);
    CHECK(digest == NULL && progress.reports >= 1);
    boxlite_box_free(progress.box);
    boxlite_runtime_free(runtime);

    /* a whole pull, the callback re-entering the library each time */
    runtime = registry_runtime(registry);
    progress_t again = {pthread_self(), test_box(runtime), 0, 0, 0, 0};
    OK(boxlite_runtime_pull_image(&digest, runtime, reference, on_progress, &again));
    CHECK(again.reports >= 1 && again.wrong_thread == 0 && again.reentry_failed == 0);
    CHECK(digest != NULL && strncmp(digest, "sha256:", 7) == 0 && strlen(digest) == 71);

    /* the listed image has that digest; a pull without progress answers the same */
    boxlite_image_list_t *images = NULL;
    OK(boxlite_runtime_list_images(&images, runtime));
    const char *listed = NULL;
    OK(boxlite_image_list_get(NULL, &listed, NULL, images, 0));
    CHECK(strcmp(listed, digest) == 0);
    boxlite_image_list_free(images);
    char *second = NULL;
    OK(boxlite_runtime_pull_image(&second, runtime, reference, NULL, NULL));
    CHECK(strcmp(second, digest) == 0);
    boxlite_string_free(second);
    boxlite_string_free(digest);

    boxlite_box_free(again.box);
    boxlite_runtime_free(runtime);
    return 0;
}
