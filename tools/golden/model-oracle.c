// model-oracle: reference outputs from llama.cpp for ember's golden model fixtures.
//
// Built and driven by tools/make-model-fixtures; it never runs in CI. It reads commands from
// stdin, one per line, and writes one JSON object per command to stdout (JSON lines), so the
// driver script owns all file formats and this program stays a thin layer over llama.h.
//
//   usage: model-oracle MODEL.gguf [N_THREADS] < commands > out.jsonl
//
// Commands (token ids are given, never text, except for `tokenize`):
//   info                              model facts and the context settings actually used
//   tokenize ADD_SPECIAL PARSE_SPECIAL PATH
//                                     llama_tokenize over the exact bytes of PATH
//   tf K N id...                      teacher-forced, one batch, logits for every position:
//                                     for positions 0..N-2 the top-K ids with log-probs, the
//                                     log-prob of the rest of the vocabulary, and the log-prob
//                                     of the actual next token
//   inc K N id...                     same output, but decoding one token per llama_decode
//   selfcheck K N id...               batch vs incremental on the same sequence: full-vocabulary
//                                     KL(batch || incremental), the same KL coarsened to the
//                                     batch top-K + rest, top-1 agreement, max |dlogit|
//   greedy N_GEN N id...              N_GEN argmax tokens after the prompt, with top-2 margins
//   greedy_nofa N_GEN N id...         the same with flash attention disabled (a noise check)
//   dump|dumpinc PATH N id...         raw f32 logits of rows 0..N-2 to PATH (experiments)
//   ppl N_CTX N id...                 perplexity exactly as llama-perplexity computes it
//
// Environment, for experiments only (the fixtures use none of these): ORACLE_FLASH_ATTN=-1|0|1,
// ORACLE_KV_F32=1 (f32 KV cache), ORACLE_N_UBATCH=N, ORACLE_NO_REPACK=1 (no weight repacking),
// ORACLE_VERBOSE=1 (llama.cpp's log on stderr).
//
// Log-softmax is taken in double precision over the full vocabulary. Everything is computed
// on the CPU with the context defaults of this llama.cpp version (flash attention "auto",
// f16 KV cache) so that the settings match llama-perplexity and llama-completion.

#include "llama.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE (1 << 22)
#define MAIN_N_CTX 512
#define MAIN_N_BATCH 512

static struct llama_model *g_model;
static const struct llama_vocab *g_vocab;
static int g_n_vocab;
static int g_threads = 2;

// Lines of llama.cpp's log that say how flash attention was resolved ("auto" is decided at
// context creation and is only visible in the log) and whether weights were repacked.
static char g_fa_log[4096];

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "model-oracle: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}

static int contains_ci(const char *s, const char *needle) {
    size_t n = strlen(needle);
    for (; *s; s++) {
        size_t i = 0;
        while (i < n && s[i] && tolower((unsigned char)s[i]) == tolower((unsigned char)needle[i])) i++;
        if (i == n) return 1;
    }
    return 0;
}

static void log_cb(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (contains_ci(text, "flash attention") || contains_ci(text, "flash_attn ") || contains_ci(text, "repack")) {
        size_t used = strlen(g_fa_log);
        snprintf(g_fa_log + used, sizeof g_fa_log - used, "%s", text);
    }
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN || getenv("ORACLE_VERBOSE")) {
        fputs(text, stderr);
    }
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

static struct llama_context *make_ctx(uint32_t n_ctx, uint32_t n_batch, bool no_flash_attn) {
    struct llama_context_params p = llama_context_default_params();
    if (no_flash_attn) p.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    p.n_ctx = n_ctx;
    p.n_batch = n_batch;
    p.n_threads = g_threads;
    p.n_threads_batch = g_threads;
    p.no_perf = true;
    // For experiments only (the fixtures use the default): ORACLE_FLASH_ATTN=0|1|-1.
    const char *fa = getenv("ORACLE_FLASH_ATTN");
    if (fa) p.flash_attn_type = (enum llama_flash_attn_type)atoi(fa);
    if (getenv("ORACLE_KV_F32")) {
        p.type_k = GGML_TYPE_F32;
        p.type_v = GGML_TYPE_F32;
    }
    const char *ub = getenv("ORACLE_N_UBATCH");
    if (ub) p.n_ubatch = (uint32_t)atoi(ub);
    struct llama_context *ctx = llama_init_from_model(g_model, p);
    if (!ctx) die("llama_init_from_model failed (n_ctx %u)", n_ctx);
    return ctx;
}

static void clear_memory(struct llama_context *ctx) {
    llama_memory_clear(llama_get_memory(ctx), true);
}

// Decodes tokens[0..n) at positions pos0.. as one batch on sequence 0. `want` selects which
// tokens get logits: NULL means all of them.
static void decode(struct llama_context *ctx, const llama_token *tokens, int n, int pos0, const bool *want) {
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = tokens[i];
        b.pos[i] = pos0 + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = want ? want[i] : 1;
    }
    b.n_tokens = n;
    int rc = llama_decode(ctx, b);
    llama_batch_free(b);
    if (rc != 0) die("llama_decode failed: %d (n=%d pos0=%d)", rc, n, pos0);
}

static double logsumexp(const float *logits, int n) {
    float mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)logits[i] - (double)mx);
    return (double)mx + log(s);
}

// Top-k ids by logit, descending; equal logits keep the lower id first.
static void topk(const float *logits, int n, int k, int *ids) {
    int have = 0;
    for (int i = 0; i < n; i++) {
        float v = logits[i];
        if (have == k && !(v > logits[ids[k - 1]])) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && v > logits[ids[j - 1]]) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = i;
    }
}

static void emit_dist(FILE *f, const float *logits, int k, int next, unsigned char *mark) {
    int ids[64];
    double lse = logsumexp(logits, g_n_vocab);
    topk(logits, g_n_vocab, k, ids);
    // The tail mass is summed directly rather than as 1 - sum(top-k): when the top-k holds
    // almost everything the subtraction would be all rounding error.
    for (int j = 0; j < k; j++) mark[ids[j]] = 1;
    double tail = 0.0;
    for (int i = 0; i < g_n_vocab; i++)
        if (!mark[i]) tail += exp((double)logits[i] - lse);
    for (int j = 0; j < k; j++) mark[ids[j]] = 0;
    fprintf(f, "{\"ids\":[");
    for (int j = 0; j < k; j++) fprintf(f, "%s%d", j ? "," : "", ids[j]);
    fprintf(f, "],\"lp\":[");
    for (int j = 0; j < k; j++) fprintf(f, "%s%.10g", j ? "," : "", (double)logits[ids[j]] - lse);
    fprintf(f, "],\"tail\":%.10g,\"next\":%.10g}", tail > 0 ? log(tail) : -1e300,
            (double)logits[next] - lse);
}

static void cmd_tf(struct llama_context *ctx, int k, const llama_token *t, int n, bool incremental) {
    if (k < 1 || k > 64) die("tf: K must be 1..64");
    if (n < 2 || n > MAIN_N_CTX) die("tf: need 2..%d tokens", MAIN_N_CTX);
    clear_memory(ctx);
    unsigned char *mark = calloc((size_t)g_n_vocab, 1);
    if (!mark) die("out of memory");
    printf("{\"cmd\":\"%s\",\"n\":%d,\"positions\":[", incremental ? "inc" : "tf", n - 1);
    if (!incremental) decode(ctx, t, n, 0, NULL);
    for (int i = 0; i < n - 1; i++) {
        const float *lg;
        if (incremental) {
            decode(ctx, t + i, 1, i, NULL);
            lg = llama_get_logits_ith(ctx, -1);
        } else {
            lg = llama_get_logits_ith(ctx, i);
        }
        if (!lg) die("no logits at %d", i);
        if (i) putchar(',');
        emit_dist(stdout, lg, k, t[i + 1], mark);
    }
    printf("]}\n");
    free(mark);
}

// Batch vs incremental evaluation of the same tokens: the reference's own numeric noise. Also
// reports the coarsened KL that ember's tests compute from a fixture (batch top-K + the rest of
// the vocabulary as one bucket), so the gap between it and the full KL is measured, not assumed.
static void cmd_selfcheck(struct llama_context *ctx, int k, const llama_token *t, int n) {
    if (n < 2 || n > MAIN_N_CTX) die("selfcheck: need 2..%d tokens", MAIN_N_CTX);
    if (k < 1 || k > 64) die("selfcheck: K must be 1..64");
    size_t nv = (size_t)g_n_vocab;
    float *batch = xmalloc(sizeof(float) * nv * (size_t)(n - 1));
    unsigned char *mark = calloc(nv, 1);
    if (!mark) die("out of memory");
    clear_memory(ctx);
    decode(ctx, t, n, 0, NULL);
    for (int i = 0; i < n - 1; i++) memcpy(batch + nv * i, llama_get_logits_ith(ctx, i), sizeof(float) * nv);
    clear_memory(ctx);
    int agree = 0;
    double kl_sum = 0.0, kl_max = 0.0, ckl_sum = 0.0, dmax = 0.0;
    double *kls = xmalloc(sizeof(double) * (size_t)(n - 1));
    double *ckls = xmalloc(sizeof(double) * (size_t)(n - 1));
    // At each top-1 disagreement: the batch distribution's log-prob gap between its own top-1
    // and the incremental top-1 (how close to a tie the reference itself was).
    double *gaps = xmalloc(sizeof(double) * (size_t)(n - 1));
    int *gap_pos = xmalloc(sizeof(int) * (size_t)(n - 1));
    int n_gaps = 0;
    for (int i = 0; i < n - 1; i++) {
        decode(ctx, t + i, 1, i, NULL);
        const float *q = llama_get_logits_ith(ctx, -1);
        const float *p = batch + nv * i;
        double lp = logsumexp(p, g_n_vocab), lq = logsumexp(q, g_n_vocab), kl = 0.0;
        int ap = 0, aq = 0;
        for (int v = 0; v < g_n_vocab; v++) {
            double a = (double)p[v] - lp, b = (double)q[v] - lq;
            kl += exp(a) * (a - b);
            double d = fabs((double)p[v] - (double)q[v]);
            if (d > dmax) dmax = d;
            if (p[v] > p[ap]) ap = v;
            if (q[v] > q[aq]) aq = v;
        }
        int ids[64];
        topk(p, g_n_vocab, k, ids);
        double ckl = 0.0, ptail = 0.0, qtail = 0.0;
        for (int j = 0; j < k; j++) {
            double a = (double)p[ids[j]] - lp, b = (double)q[ids[j]] - lq;
            ckl += exp(a) * (a - b);
            mark[ids[j]] = 1;
        }
        for (int v = 0; v < g_n_vocab; v++) {
            if (mark[v]) continue;
            ptail += exp((double)p[v] - lp);
            qtail += exp((double)q[v] - lq);
        }
        for (int j = 0; j < k; j++) mark[ids[j]] = 0;
        if (ptail > 0) ckl += ptail * (log(ptail) - log(qtail));
        agree += ap == aq;
        if (ap != aq) {
            gaps[n_gaps] = (double)p[ap] - (double)p[aq];
            gap_pos[n_gaps++] = i;
        }
        kl_sum += kl;
        ckl_sum += ckl;
        if (kl > kl_max) kl_max = kl;
        kls[i] = kl;
        ckls[i] = ckl;
    }
    printf("{\"cmd\":\"selfcheck\",\"n\":%d,\"kl\":[", n - 1);
    for (int i = 0; i < n - 1; i++) printf("%s%.6g", i ? "," : "", kls[i]);
    printf("],\"coarse_kl\":[");
    for (int i = 0; i < n - 1; i++) printf("%s%.6g", i ? "," : "", ckls[i]);
    printf("],\"mismatch_positions\":[");
    for (int i = 0; i < n_gaps; i++) printf("%s%d", i ? "," : "", gap_pos[i]);
    printf("],\"mismatch_gaps\":[");
    for (int i = 0; i < n_gaps; i++) printf("%s%.6g", i ? "," : "", gaps[i]);
    printf("],\"top1_agree\":%d,\"mean_kl\":%.6g,\"max_kl\":%.6g,\"mean_coarse_kl\":%.6g,\"max_abs_logit_diff\":%.6g}\n",
           agree, kl_sum / (n - 1), kl_max, ckl_sum / (n - 1), dmax);
    free(gaps);
    free(gap_pos);
    free(kls);
    free(ckls);
    free(mark);
    free(batch);
}

// Raw f32 logits for experiments: rows 0..N-2, batch or incremental.
static void cmd_dump(struct llama_context *ctx, const char *path, bool incremental, const llama_token *t, int n) {
    if (n < 2 || n > MAIN_N_CTX) die("dump: need 2..%d tokens", MAIN_N_CTX);
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot write %s", path);
    clear_memory(ctx);
    if (!incremental) decode(ctx, t, n, 0, NULL);
    for (int i = 0; i < n - 1; i++) {
        if (incremental) decode(ctx, t + i, 1, i, NULL);
        const float *lg = llama_get_logits_ith(ctx, incremental ? -1 : i);
        if (fwrite(lg, sizeof(float), (size_t)g_n_vocab, f) != (size_t)g_n_vocab) die("short write");
    }
    fclose(f);
    printf("{\"cmd\":\"dump\",\"rows\":%d,\"n_vocab\":%d}\n", n - 1, g_n_vocab);
}

static void cmd_greedy(struct llama_context *ctx, int n_gen, const llama_token *t, int n) {
    if (n < 1 || n_gen < 1 || n + n_gen > MAIN_N_CTX) die("greedy: bad lengths");
    clear_memory(ctx);
    bool *want = xmalloc(sizeof(bool) * (size_t)n);
    for (int i = 0; i < n; i++) want[i] = i == n - 1;
    decode(ctx, t, n, 0, want);
    free(want);
    llama_token *out = xmalloc(sizeof(llama_token) * (size_t)n_gen);
    double *margin = xmalloc(sizeof(double) * (size_t)n_gen);
    for (int g = 0; g < n_gen; g++) {
        const float *lg = llama_get_logits_ith(ctx, -1);
        int ids[2];
        topk(lg, g_n_vocab, 2, ids);
        out[g] = ids[0];
        margin[g] = (double)lg[ids[0]] - (double)lg[ids[1]];
        // End-of-generation tokens do not stop the run: a fixed length keeps the comparison simple.
        if (g + 1 < n_gen) decode(ctx, &out[g], 1, n + g, NULL);
    }
    printf("{\"cmd\":\"greedy\",\"tokens\":[");
    for (int g = 0; g < n_gen; g++) printf("%s%d", g ? "," : "", out[g]);
    printf("],\"margins\":[");
    for (int g = 0; g < n_gen; g++) printf("%s%.6g", g ? "," : "", margin[g]);
    printf("]}\n");
    free(out);
    free(margin);
}

// The method of perplexity() in tools/perplexity/perplexity.cpp (n_seq = 1, n_batch = n_ctx):
// the token stream is cut into floor(N / n_ctx) chunks; each chunk is evaluated from an empty
// KV cache; when the vocabulary adds BOS, the first token of each chunk is *replaced* by BOS;
// logits at positions n_ctx/2 .. n_ctx-2 score the tokens at n_ctx/2+1 .. n_ctx-1.
static void cmd_ppl(int n_ctx, llama_token *t, int n) {
    if (n_ctx < 4 || n < 2 * n_ctx) die("ppl: need n_ctx >= 4 and at least 2*n_ctx tokens");
    struct llama_context *ctx = make_ctx((uint32_t)n_ctx, (uint32_t)n_ctx, false);
    bool add_bos = llama_vocab_get_add_bos(g_vocab);
    int n_chunk = n / n_ctx, first = n_ctx / 2;
    bool *want = xmalloc(sizeof(bool) * (size_t)n_ctx);
    llama_token *chunk = xmalloc(sizeof(llama_token) * (size_t)n_ctx);
    for (int i = 0; i < n_ctx; i++) want[i] = i >= first;
    double nll = 0.0;
    long count = 0;
    printf("{\"cmd\":\"ppl\",\"n_ctx\":%d,\"n_chunk\":%d,\"first\":%d,\"add_bos\":%s,\"chunks\":[", n_ctx, n_chunk,
           first, add_bos ? "true" : "false");
    for (int c = 0; c < n_chunk; c++) {
        memcpy(chunk, t + (size_t)c * n_ctx, sizeof(llama_token) * (size_t)n_ctx);
        if (add_bos) chunk[0] = llama_vocab_bos(g_vocab);
        clear_memory(ctx);
        decode(ctx, chunk, n_ctx, 0, want);
        double chunk_nll = 0.0;
        for (int i = first; i < n_ctx - 1; i++) {
            const float *lg = llama_get_logits_ith(ctx, i);
            chunk_nll += logsumexp(lg, g_n_vocab) - (double)lg[chunk[i + 1]];
        }
        int m = n_ctx - 1 - first;
        nll += chunk_nll;
        count += m;
        printf("%s{\"nll_sum\":%.10g,\"count\":%d,\"ppl\":%.8g,\"running_ppl\":%.8g}", c ? "," : "", chunk_nll, m,
               exp(chunk_nll / m), exp(nll / (double)count));
    }
    printf("],\"count\":%ld,\"ppl\":%.8g}\n", count, exp(nll / (double)count));
    free(want);
    free(chunk);
    llama_free(ctx);
}

static void cmd_tokenize(int add_special, int parse_special, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = xmalloc((size_t)len + 1);
    if (fread(text, 1, (size_t)len, f) != (size_t)len) die("short read on %s", path);
    text[len] = 0;
    fclose(f);
    int cap = (int)len + 16;
    llama_token *ids = xmalloc(sizeof(llama_token) * (size_t)cap);
    int n = llama_tokenize(g_vocab, text, (int32_t)len, ids, cap, add_special != 0, parse_special != 0);
    if (n < 0) die("llama_tokenize failed: %d", n);
    printf("{\"cmd\":\"tokenize\",\"ids\":[");
    for (int i = 0; i < n; i++) printf("%s%d", i ? "," : "", ids[i]);
    printf("]}\n");
    free(ids);
    free(text);
}

static void cmd_info(struct llama_context *ctx, const char *load_log, const char *main_fa_log) {
    char desc[256];
    llama_model_desc(g_model, desc, sizeof desc);
    printf("{\"cmd\":\"info\",\"desc\":");
    json_string(stdout, desc);
    printf(",\"n_vocab\":%d,\"add_bos\":%s,\"bos\":%d,\"eos\":%d,\"n_ctx\":%u,\"n_batch\":%u,\"n_ubatch\":%u,"
           "\"n_threads\":%d,\"n_threads_batch\":%d,\"flash_attn_requested\":\"%s\",\"flash_attn_log\":",
           g_n_vocab, llama_vocab_get_add_bos(g_vocab) ? "true" : "false", llama_vocab_bos(g_vocab),
           llama_vocab_eos(g_vocab), llama_n_ctx(ctx), llama_n_batch(ctx), llama_n_ubatch(ctx), llama_n_threads(ctx),
           llama_n_threads_batch(ctx),
           llama_flash_attn_type_name(getenv("ORACLE_FLASH_ATTN")
                                          ? (enum llama_flash_attn_type)atoi(getenv("ORACLE_FLASH_ATTN"))
                                          : llama_context_default_params().flash_attn_type));
    json_string(stdout, main_fa_log);
    printf(",\"repack_log\":");
    json_string(stdout, load_log);
    printf(",\"system_info\":");
    json_string(stdout, llama_print_system_info());
    printf("}\n");
}

// Parses "N id..." from *s into a fresh array.
static llama_token *parse_ids(char **s, int *n_out) {
    char *end;
    long n = strtol(*s, &end, 10);
    if (end == *s || n < 0 || n > 1000000) die("bad token count");
    *s = end;
    llama_token *t = xmalloc(sizeof(llama_token) * (size_t)(n ? n : 1));
    for (long i = 0; i < n; i++) {
        long v = strtol(*s, &end, 10);
        if (end == *s) die("expected %ld ids, got %ld", n, i);
        if (v < 0 || v >= g_n_vocab) die("token id %ld out of range", v);
        t[i] = (llama_token)v;
        *s = end;
    }
    *n_out = (int)n;
    return t;
}

int main(int argc, char **argv) {
    if (argc < 2) die("usage: model-oracle MODEL.gguf [N_THREADS] < commands");
    if (argc > 2) g_threads = atoi(argv[2]);
    llama_log_set(log_cb, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    if (getenv("ORACLE_NO_REPACK")) mp.use_extra_bufts = false;
    g_model = llama_model_load_from_file(argv[1], mp);
    if (!g_model) die("cannot load %s", argv[1]);
    char load_log[sizeof g_fa_log];
    memcpy(load_log, g_fa_log, sizeof g_fa_log);
    g_fa_log[0] = 0;
    g_vocab = llama_model_get_vocab(g_model);
    g_n_vocab = llama_vocab_n_tokens(g_vocab);
    struct llama_context *ctx = make_ctx(MAIN_N_CTX, MAIN_N_BATCH, false);
    // Made on first use: a second set of numerics (attention without flash attention) to
    // measure how stable greedy continuations are against the reference's own rounding.
    struct llama_context *ctx_nofa = NULL;
    char main_fa_log[sizeof g_fa_log];
    memcpy(main_fa_log, g_fa_log, sizeof g_fa_log);

    char *line = xmalloc(MAX_LINE);
    while (fgets(line, MAX_LINE, stdin)) {
        char cmd[32];
        int used = 0;
        if (sscanf(line, "%31s%n", cmd, &used) != 1) continue;
        char *s = line + used;
        int n;
        if (!strcmp(cmd, "info")) {
            cmd_info(ctx, load_log, main_fa_log);
        } else if (!strcmp(cmd, "tokenize")) {
            int a, p;
            char path[4096];
            if (sscanf(s, "%d %d %4095s", &a, &p, path) != 3) die("tokenize: bad arguments");
            cmd_tokenize(a, p, path);
        } else if (!strcmp(cmd, "tf") || !strcmp(cmd, "inc")) {
            int k = (int)strtol(s, &s, 10);
            llama_token *t = parse_ids(&s, &n);
            cmd_tf(ctx, k, t, n, cmd[0] == 'i');
            free(t);
        } else if (!strcmp(cmd, "selfcheck")) {
            int k = (int)strtol(s, &s, 10);
            llama_token *t = parse_ids(&s, &n);
            cmd_selfcheck(ctx, k, t, n);
            free(t);
        } else if (!strcmp(cmd, "dump") || !strcmp(cmd, "dumpinc")) {
            char path[4096];
            int used2 = 0;
            if (sscanf(s, "%4095s%n", path, &used2) != 1) die("dump: bad arguments");
            s += used2;
            llama_token *t = parse_ids(&s, &n);
            cmd_dump(ctx, path, cmd[4] == 'i', t, n);
            free(t);
        } else if (!strcmp(cmd, "greedy") || !strcmp(cmd, "greedy_nofa")) {
            int n_gen = (int)strtol(s, &s, 10);
            llama_token *t = parse_ids(&s, &n);
            if (cmd[6] && !ctx_nofa) ctx_nofa = make_ctx(MAIN_N_CTX, MAIN_N_BATCH, true);
            cmd_greedy(cmd[6] ? ctx_nofa : ctx, n_gen, t, n);
            free(t);
        } else if (!strcmp(cmd, "ppl")) {
            int n_ctx = (int)strtol(s, &s, 10);
            llama_token *t = parse_ids(&s, &n);
            cmd_ppl(n_ctx, t, n);
            free(t);
        } else {
            die("unknown command '%s'", cmd);
        }
        fflush(stdout);
    }
    free(line);
    if (ctx_nofa) llama_free(ctx_nofa);
    llama_free(ctx);
    llama_model_free(g_model);
    llama_backend_free();
    return 0;
}
