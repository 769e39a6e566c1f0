/*
 * One model, four contexts on four threads generating at the same time: each must give
 * exactly the tokens it gives when run alone. Seeded temperature sampling makes the
 * output depend on every bit of the logits, and the contexts' saved states (their tokens,
 * KV caches and last logits) are compared byte for byte, so any interference between
 * threads shows.
 *
 * Usage: threads MODEL.gguf [N_TOKENS]
 */
#define _POSIX_C_SOURCE 200809L /* open, nanosleep, pthreads under -std=c99 */

#include <pthread.h>

#include "check.h"

#define N_THREADS 4

static const char *PROMPTS[N_THREADS] = {
    "The capital of France is",
    "Once upon a time",
    "def fibonacci(n):",
    "The best way to learn a language is",
};

struct job {
    const ember_model *model;
    const char *prompt;
    uint64_t seed;
    uint32_t n_tokens;
    char text[2048];
    size_t len;
    unsigned char *state;
    size_t state_size;
    ember_status status;
    char error[512];
};

static bool append(const char *piece, size_t len, void *user) {
    struct job *j = user;
    if (j->len + len < sizeof j->text) {
        memcpy(j->text + j->len, piece, len);
        j->len += len;
        j->text[j->len] = '\0';
    }
    return true;
}

static void *run(void *arg) {
    struct job *j = arg;
    ember_context_params cp;
    ember_sampler_params sp;
    ember_generate_params gp;
    ember_context *ctx = NULL;
    ember_sampler *s = NULL;

    j->len = 0;
    j->text[0] = '\0';
    ember_context_params_default(&cp, sizeof cp);
    cp.n_ctx = 64;
    cp.n_threads = 1;
    ember_sampler_params_default(&sp, sizeof sp);
    sp.seed = j->seed;
    sp.temperature = 0.9f;
    ember_generate_params_default(&gp, sizeof gp);
    gp.max_tokens = j->n_tokens;

    j->status = ember_context_new(j->model, &cp, &ctx);
    if (j->status == EMBER_OK) j->status = ember_sampler_new(j->model, &sp, &s);
    if (j->status == EMBER_OK)
        j->status = ember_generate(ctx, s, j->prompt, strlen(j->prompt), &gp, append, j, NULL);
    if (j->status == EMBER_OK) j->status = ember_state_size(ctx, &j->state_size);
    if (j->status == EMBER_OK) {
        j->state = malloc(j->state_size);
        j->status = j->state ? ember_state_save(ctx, j->state, j->state_size, &j->state_size)
                             : EMBER_ERR_PANIC;
    }
    snprintf(j->error, sizeof j->error, "%s", ember_last_error());
    ember_sampler_free(s);
    ember_context_free(ctx);
    return NULL;
}

int main(int argc, char **argv) {
    ember_model *m = NULL;
    static struct job alone[N_THREADS], together[N_THREADS];
    pthread_t th[N_THREADS];
    uint32_t n_tokens = 4;
    int i;

    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [N_TOKENS]\n", argv[0]);
        return 2;
    }
    if (argc > 2) n_tokens = (uint32_t)atoi(argv[2]);
    OK(ember_model_load(argv[1], NULL, &m));
    REQUIRE(m != NULL);

    for (i = 0; i < N_THREADS; i++) {
        alone[i].model = together[i].model = m;
        alone[i].prompt = together[i].prompt = PROMPTS[i];
        alone[i].seed = together[i].seed = 1000 + (uint64_t)i;
        alone[i].n_tokens = together[i].n_tokens = n_tokens;
        run(&alone[i]);
        CHECK(alone[i].status == EMBER_OK);
        if (alone[i].status != EMBER_OK) fprintf(stderr, "alone %d: %s\n", i, alone[i].error);
    }
    for (i = 0; i < N_THREADS; i++) REQUIRE(pthread_create(&th[i], NULL, run, &together[i]) == 0);
    for (i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);

    for (i = 0; i < N_THREADS; i++) {
        CHECK(together[i].status == EMBER_OK);
        CHECK(alone[i].len > 0);
        CHECK(strcmp(alone[i].text, together[i].text) == 0);
        CHECK(alone[i].state_size == together[i].state_size && alone[i].state_size > 0 &&
              memcmp(alone[i].state, together[i].state, alone[i].state_size) == 0);
        printf("[%d] %s|%s\n", i, PROMPTS[i], together[i].text);
        if (strcmp(alone[i].text, together[i].text) != 0)
            fprintf(stderr, "  alone:    \"%s\"\n  together: \"%s\" (%s)\n", alone[i].text,
                    together[i].text, together[i].error);
    }
    for (i = 0; i < N_THREADS; i++) {
        free(alone[i].state);
        free(together[i].state);
    }
    ember_model_free(m);
    return report("threads");
}
