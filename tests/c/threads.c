/* Two threads exec'ing in one box at once, each getting its own output. */
#include "common.h"

#include <pthread.h>

typedef struct {
    boxlite_box_t *box;
    const char *word;
    int ok;
} job_t;

static void *run_job(void *arg) {
    job_t *job = arg;
    char script[128];
    snprintf(script, sizeof script, "for i in 1 2 3 4 5; do echo %s$i; done", job->word);
    for (int round = 0; round < 5; round++) {
        boxlite_output_t *output = run_sh(job->box, script);
        size_t len = 0;
        const uint8_t *out = boxlite_output_stdout(output, &len);
        char expected[128];
        snprintf(expected, sizeof expected, "%s1\n%s2\n%s3\n%s4\n%s5\n", job->word, job->word, job->word, job->word, job->word);
        if (len != strlen(expected) || memcmp(out, expected, len) != 0) {
            boxlite_output_free(output);
            return NULL;
        }
        boxlite_output_free(output);
    }
    job->ok = 1;
    return NULL;
}

int main(void) {
    boxlite_runtime_t *runtime = test_runtime();
    boxlite_box_t *box = test_box(runtime);
    OK(boxlite_box_start(box));
    job_t a = {box, "alpha", 0}, b = {box, "beta", 0};
    pthread_t ta, tb;
    CHECK(pthread_create(&ta, NULL, run_job, &a) == 0);
    CHECK(pthread_create(&tb, NULL, run_job, &b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.ok && b.ok);
    OK(boxlite_box_stop(box));
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return 0;
}
