/* tokenize-bench: llama.cpp's llama_tokenize speed on a file (median of 5, load excluded).
 * Built and run by tools/bench-tokenizer; never committed as a binary.
 * usage: tokenize-bench MODEL.gguf FILE */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *ud) {
    (void)level; (void)text; (void)ud;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s MODEL FILE\n", argv[0]); return 2; }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    FILE *f = fopen(argv[2], "rb");
    if (!f) { perror(argv[2]); return 1; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc(n);
    if (fread(text, 1, n, f) != (size_t)n) return 1;
    fclose(f);
    double t0 = now();
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    const struct llama_vocab *v = llama_model_get_vocab(model);
    double load = now() - t0;
    int cap = (int)n + 16;
    llama_token *toks = malloc(sizeof(llama_token) * cap);
    double times[5];
    int count = 0;
    for (int i = 0; i < 5; i++) {
        double t = now();
        count = llama_tokenize(v, text, (int)n, toks, cap, true, false);
        times[i] = now() - t;
    }
    qsort(times, 5, sizeof(double), cmp);
    printf("tokenizer load %.1f ms; encoded %ld bytes into %d tokens: median %.2f ms, %.2f MB/s\n",
           load * 1e3, n, count, times[2] * 1e3, n / times[2] / 1e6);
    llama_model_free(model);
    return 0;
}
