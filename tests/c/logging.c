/* The process-wide log callback: records of the chosen level reach it while a box boots;
 * user_data_free runs once when it is replaced; no record arrives after it is removed; a bad
 * level is refused (and its user_data freed). */
#include "common.h"
#include <pthread.h>

typedef struct {
    pthread_mutex_t lock;
    int records, started, too_verbose, frees;
} seen_t;

static void on_log(boxlite_log_level_t level, const char *target, const char *message, void *user_data) {
    seen_t *seen = user_data;
    CHECK(target != NULL && message != NULL);
    pthread_mutex_lock(&seen->lock);
    seen->records++;
    if (level > BOXLITE_LOG_INFO) seen->too_verbose++;
    if (level == BOXLITE_LOG_INFO && strstr(message, "started")) seen->started++;
    pthread_mutex_unlock(&seen->lock);
}
static void count_free(void *user_data) { ((seen_t *)user_data)->frees++; }

int main(void) {
    seen_t seen = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};
    EXPECT_ERROR(boxlite_log_set_callback(on_log, 9, &seen, count_free), BOXLITE_ERROR_INVALID_ARGUMENT);
    CHECK(seen.frees == 1);
    seen.frees = 0;
    OK(boxlite_log_set_callback(on_log, BOXLITE_LOG_INFO, &seen, count_free));

    boxlite_runtime_t *runtime = test_runtime();
    boxlite_box_t *box = test_box(runtime);
    OK(boxlite_box_start(box));
    pthread_mutex_lock(&seen.lock);
    CHECK(seen.started >= 1 && seen.too_verbose == 0);
    pthread_mutex_unlock(&seen.lock);
    CHECK(seen.frees == 0);

    OK(boxlite_log_set_callback(NULL, BOXLITE_LOG_INFO, NULL, NULL));
    CHECK(seen.frees == 1);
    int before = seen.records;
    OK(boxlite_box_stop(box)); /* logs "stopped": nobody receives it now */
    CHECK(seen.records == before);

    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}
