/*
 * Misuse of every function of the C ABI: NULL pointers, zero sizes, out-of-range token
 * ids, handles freed and set to NULL, buffers too small, bad struct sizes, crafted states,
 * re-entrant callbacks. Every call must come back with the right status (and a message),
 * never crash; run under AddressSanitizer and Valgrind it must also be clean.
 *
 * Usage: misuse MODEL.gguf SCRATCH_DIR
 */
#define _POSIX_C_SOURCE 200809L /* open, nanosleep, pthreads under -std=c99 */

#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"

#define SENTINEL ((void *)(uintptr_t)0x5a5a5a5a)

static const char *g_model_path;
static char g_tmp[4096];

static void tmp_path(const char *name, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", g_tmp, name);
}

static bool cancel_progress(float progress, void *user) {
    (void)progress;
    ++*(int *)user;
    return false;
}

static bool count_progress(float progress, void *user) {
    (void)progress;
    ++*(int *)user;
    return true;
}

static void version_and_errors(void) {
    CHECK(strcmp(ember_version(), "") != 0);
    CHECK(ember_abi_version() == EMBER_ABI_VERSION);
    CHECK(strcmp(ember_status_name(EMBER_ERR_IO), "EMBER_ERR_IO") == 0);
    CHECK(strcmp(ember_status_name(-1), "EMBER_ERR_UNKNOWN") == 0);
    CHECK(strcmp(ember_status_name(1 << 30), "EMBER_ERR_UNKNOWN") == 0);
    CHECK(ember_last_error() != NULL);
}

static void params_structs(void) {
    ember_model_params mp;
    ember_context_params cp;
    ember_sampler_params sp;
    ember_generate_params gp;
    /* A caller compiled against a newer header: a bigger struct. */
    union {
        ember_model_params p;
        unsigned char bytes[sizeof(ember_model_params) + 32];
    } big;

    EXPECT(ember_model_params_default(NULL, sizeof mp), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_model_params_default(&mp, 0), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_model_params_default(&mp, 3), EMBER_ERR_INVALID_ARGUMENT);
    /* The first version ended before `prefetch`: smaller is no version at all. */
    EXPECT(ember_model_params_default(&mp, offsetof(ember_model_params, prefetch) - 1),
           EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_model_params_default(&mp, (size_t)1 << 40), EMBER_ERR_INVALID_ARGUMENT);
    OK(ember_model_params_default(&mp, sizeof mp));
    CHECK(mp.struct_size == sizeof mp && mp.use_mmap && !mp.use_mlock && mp.progress == NULL);
    CHECK(!mp.prefetch);

    memset(&big, 0xee, sizeof big);
    OK(ember_model_params_default(&big.p, sizeof big));
    CHECK(big.p.struct_size == sizeof big);
    CHECK(big.bytes[sizeof big - 1] == 0); /* fields this library does not know are zeroed */

    EXPECT(ember_context_params_default(NULL, sizeof cp), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_context_params_default(&cp, 1), EMBER_ERR_INVALID_ARGUMENT);
    OK(ember_context_params_default(&cp, sizeof cp));
    CHECK(cp.n_batch == 512 && cp.kv_type == EMBER_KV_F16 && !cp.logits_all);

    EXPECT(ember_sampler_params_default(NULL, sizeof sp), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_sampler_params_default(&sp, 2), EMBER_ERR_INVALID_ARGUMENT);
    OK(ember_sampler_params_default(&sp, sizeof sp));
    CHECK(sp.top_k == 40 && sp.logit_bias == NULL && sp.n_logit_bias == 0);

    EXPECT(ember_generate_params_default(NULL, sizeof gp), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_generate_params_default(&gp, 0), EMBER_ERR_INVALID_ARGUMENT);
    OK(ember_generate_params_default(&gp, sizeof gp));
    CHECK(gp.max_tokens == 256 && gp.add_special && gp.stop == NULL);
}

/* Memory estimates: what they report, NULL handling, the context budget. */
static void estimates(const ember_model *m) {
    ember_model_memory mm, mm2;
    ember_context_memory cm, cf;
    ember_context_params p;
    ember_context_info info;
    ember_context *c = NULL;

    mm.struct_size = sizeof mm;
    EXPECT(ember_model_estimate(NULL, NULL, &mm), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_model_estimate(g_model_path, NULL, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_model_estimate("/nonexistent/model.gguf", NULL, &mm), EMBER_ERR_IO);
    mm.struct_size = 0;
    EXPECT(ember_model_estimate(g_model_path, NULL, &mm), EMBER_ERR_INVALID_ARGUMENT);
    mm.struct_size = sizeof mm;
    OK(ember_model_estimate(g_model_path, NULL, &mm));
    CHECK(mm.mapped_bytes > 50000000ull && mm.heap_bytes > 1000000ull);
    CHECK(mm.total_bytes == mm.mapped_bytes + mm.heap_bytes);
    mm2.struct_size = sizeof mm2;
    EXPECT(ember_model_get_memory(NULL, &mm2), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_model_get_memory(m, NULL), EMBER_ERR_NULL_ARGUMENT);
    OK(ember_model_get_memory(m, &mm2));
    CHECK(memcmp(&mm, &mm2, sizeof mm) == 0);

    OK(ember_context_params_default(&p, sizeof p));
    CHECK(p.max_bytes == 0);
    p.n_ctx = 256;
    p.n_batch = 64;
    p.n_threads = 1;
    cm.struct_size = sizeof cm;
    EXPECT(ember_context_estimate(NULL, &p, &cm), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_context_estimate(m, &p, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_context_estimate_file(NULL, &p, &cm), EMBER_ERR_NULL_ARGUMENT);
    p.kv_type = 7;
    EXPECT(ember_context_estimate(m, &p, &cm), EMBER_ERR_INVALID_ARGUMENT);
    p.kv_type = EMBER_KV_F16;
    OK(ember_context_estimate(m, NULL, &cm));
    CHECK(cm.n_ctx == 4096 && cm.n_batch == 512);
    OK(ember_context_estimate(m, &p, &cm));
    CHECK(cm.n_ctx == 256 && cm.n_batch == 64 && cm.n_threads == 1);
    CHECK(cm.kv_bytes == 30ull * 256 * 2 * 192 * 2); /* layers, positions, k and v, f16 */
    CHECK(cm.total_bytes == cm.kv_bytes + cm.scratch_bytes + cm.logits_bytes +
                                cm.other_bytes + cm.overhead_bytes);
    cf.struct_size = sizeof cf;
    OK(ember_context_estimate_file(g_model_path, &p, &cf));
    CHECK(memcmp(&cm, &cf, sizeof cm) == 0);

    p.max_bytes = cm.total_bytes - 1;
    EXPECT(ember_context_new(m, &p, &c), EMBER_ERR_OVER_BUDGET);
    CHECK(c == NULL && strstr(ember_last_error(), "max_bytes") != NULL);
    p.max_bytes = cm.total_bytes;
    OK(ember_context_new(m, &p, &c));
    REQUIRE(c != NULL);
    info.struct_size = sizeof info;
    OK(ember_context_get_info(c, &info));
    CHECK(info.size_bytes == cm.total_bytes - cm.overhead_bytes);
    ember_context_free(c);

    /* A caller built before max_bytes existed gets no budget. */
    OK(ember_context_params_default(&p, offsetof(ember_context_params, max_bytes)));
    p.n_ctx = 256;
    p.max_bytes = 1; /* past the caller's struct_size: never read */
    OK(ember_context_estimate(m, &p, &cf));
    c = NULL;
    OK(ember_context_new(m, &p, &c));
    ember_context_free(c);
}

static void model_loading(void) {
    ember_model *m = SENTINEL;
    ember_model_params p;
    union {
        ember_model_params p;
        unsigned char bytes[sizeof(ember_model_params) + 16];
    } big;
    int calls = 0;
    int fd;
    char path[4200];

    ember_model_free(NULL);
    CHECK(ember_last_error()[0] == '\0');

    EXPECT(ember_model_load(NULL, NULL, &m), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_model_load(g_model_path, NULL, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_model_load("/nonexistent/model.gguf", NULL, &m), EMBER_ERR_IO);
    EXPECT(ember_model_load("", NULL, &m), EMBER_ERR_IO);
    EXPECT(ember_model_load("/", NULL, &m), EMBER_ERR_IO);

    /* Not GGUF: a small file with text in it. */
    tmp_path("not-a-model.gguf", path, sizeof path);
    {
        FILE *f = fopen(path, "wb");
        REQUIRE(f != NULL);
        fputs("this is not a GGUF file, just text", f);
        fclose(f);
    }
    EXPECT(ember_model_load(path, NULL, &m), EMBER_ERR_MALFORMED_MODEL);
    /* Empty file. */
    tmp_path("empty.gguf", path, sizeof path);
    {
        FILE *f = fopen(path, "wb");
        REQUIRE(f != NULL);
        fclose(f);
    }
    EXPECT(ember_model_load(path, NULL, &m), EMBER_ERR_MALFORMED_MODEL);

    OK(ember_model_params_default(&p, sizeof p));
    p.struct_size = 0;
    EXPECT(ember_model_load(g_model_path, &p, &m), EMBER_ERR_INVALID_ARGUMENT);
    p.struct_size = 0xffffffffu; /* an uninitialized struct */
    EXPECT(ember_model_load(g_model_path, &p, &m), EMBER_ERR_INVALID_ARGUMENT);

    /* A newer caller's struct: fine while the unknown fields are zero. */
    OK(ember_model_params_default(&big.p, sizeof big));
    big.bytes[sizeof big - 3] = 1;
    EXPECT(ember_model_load(g_model_path, &big.p, &m), EMBER_ERR_UNSUPPORTED);

    /* A bool field holding a byte other than 0/1 is read as true, not trusted. */
    OK(ember_model_params_default(&p, sizeof p));
    memset(&p.use_mmap, 0x7f, 1);
    p.progress = cancel_progress;
    p.progress_user_data = &calls;
    EXPECT(ember_model_load(g_model_path, &p, &m), EMBER_ERR_CANCELLED);
    CHECK(calls == 1);
    CHECK(m == SENTINEL); /* out-params are untouched on failure */

    /* File descriptors. */
    EXPECT(ember_model_load_fd(-1, 0, 0, NULL, &m), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_model_load_fd(987654, 0, 0, NULL, &m), EMBER_ERR_IO);
    fd = open(g_model_path, O_RDONLY);
    REQUIRE(fd >= 0);
    EXPECT(ember_model_load_fd(fd, 0, 0, NULL, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_model_load_fd(fd, (uint64_t)1 << 40, 0, NULL, &m), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_model_load_fd(fd, 0, (uint64_t)1 << 40, NULL, &m), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_model_load_fd(fd, UINT64_MAX, 2, NULL, &m), EMBER_ERR_INVALID_ARGUMENT);
    /* A window that does not start at a GGUF header. */
    EXPECT(ember_model_load_fd(fd, 7, 4096, NULL, &m), EMBER_ERR_MALFORMED_MODEL);
    /* A window that cuts the model short. */
    EXPECT(ember_model_load_fd(fd, 0, 1 << 20, NULL, &m), EMBER_ERR_MALFORMED_MODEL);
    calls = 0;
    OK(ember_model_params_default(&p, sizeof p));
    p.progress = count_progress;
    p.progress_user_data = &calls;
    OK(ember_model_load_fd(fd, 0, 0, &p, &m));
    close(fd); /* ember keeps its own descriptor only while loading */
    CHECK(calls >= 2);
    REQUIRE(m != SENTINEL && m != NULL);
    ember_model_free(m);
}

static void model_queries(const ember_model *m) {
    ember_model_info info;
    char buf[64];
    size_t needed = 12345;

    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    EXPECT(ember_model_get_info(NULL, &info), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_model_get_info(m, NULL), EMBER_ERR_NULL_ARGUMENT);
    info.struct_size = 0;
    EXPECT(ember_model_get_info(m, &info), EMBER_ERR_INVALID_ARGUMENT);
    info.struct_size = sizeof info;
    OK(ember_model_get_info(m, &info));
    CHECK(info.n_vocab == 49152 && info.n_layer == 30 && info.n_ctx_train == 8192);

    EXPECT(ember_model_architecture(NULL, buf, sizeof buf, &needed), EMBER_ERR_NULL_ARGUMENT);
    CHECK(needed == 0); /* the size is always written */
    EXPECT(ember_model_architecture(m, buf, sizeof buf, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_model_architecture(m, NULL, 5, &needed), EMBER_ERR_NULL_ARGUMENT);
    OK(ember_model_architecture(m, NULL, 0, &needed));
    CHECK(needed == 6); /* "llama" and its NUL */
    memset(buf, 'x', sizeof buf);
    EXPECT(ember_model_architecture(m, buf, 5, &needed), EMBER_ERR_BUFFER_TOO_SMALL);
    CHECK(needed == 6 && buf[0] == 'x'); /* nothing written to a short buffer */
    OK(ember_model_architecture(m, buf, 6, &needed));
    CHECK(strcmp(buf, "llama") == 0);

    OK(ember_model_chat_template(m, NULL, 0, &needed));
    CHECK(needed > 100);
    EXPECT(ember_model_chat_template(m, buf, sizeof buf, &needed), EMBER_ERR_BUFFER_TOO_SMALL);

    EXPECT(ember_model_meta(m, NULL, buf, sizeof buf, &needed), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_model_meta(NULL, "general.name", buf, sizeof buf, &needed),
           EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_model_meta(m, "no.such.key", buf, sizeof buf, &needed), EMBER_ERR_NOT_FOUND);
    CHECK(needed == 0);
    EXPECT(ember_model_meta(m, "bad\xff", buf, sizeof buf, &needed), EMBER_ERR_INVALID_UTF8);
    EXPECT(ember_model_meta(m, "", buf, sizeof buf, &needed), EMBER_ERR_NOT_FOUND);
    OK(ember_model_meta(m, "llama.context_length", buf, sizeof buf, &needed));
    CHECK(strcmp(buf, "8192") == 0 && needed == 5);
}

static void tokens(const ember_model *m) {
    ember_token toks[64];
    size_t n = 777;
    char buf[64];
    ember_token bad[2] = {1, 49152};
    ember_token t = 99999;
    bool eog = false;
    const char *text = "Hello world";
    union {
        uint32_t align;
        unsigned char bytes[64];
    } storage;

    EXPECT(ember_tokenize(NULL, text, strlen(text), false, false, toks, 64, &n),
           EMBER_ERR_NULL_ARGUMENT);
    CHECK(n == 0);
    EXPECT(ember_tokenize(m, NULL, 5, false, false, toks, 64, &n), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_tokenize(m, text, strlen(text), false, false, toks, 64, NULL),
           EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_tokenize(m, text, strlen(text), false, false, NULL, 64, &n),
           EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_tokenize(m, "\xc3\x28", 2, false, false, toks, 64, &n), EMBER_ERR_INVALID_UTF8);
    /* Misaligned token buffer. */
    EXPECT(ember_tokenize(m, text, strlen(text), false, false,
                          (ember_token *)(void *)(storage.bytes + 1), 8, &n),
           EMBER_ERR_INVALID_ARGUMENT);
    OK(ember_tokenize(m, NULL, 0, false, false, toks, 64, &n));
    CHECK(n == 0);
    OK(ember_tokenize(m, text, strlen(text), false, false, NULL, 0, &n));
    CHECK(n == 2);
    toks[0] = 4242;
    EXPECT(ember_tokenize(m, text, strlen(text), false, false, toks, 1, &n),
           EMBER_ERR_BUFFER_TOO_SMALL);
    CHECK(n == 2 && toks[0] == 4242);
    OK(ember_tokenize(m, text, strlen(text), true, true, toks, 64, &n));
    CHECK(n == 2);
    /* Text with NUL bytes inside is text like any other. */
    OK(ember_tokenize(m, "a\0b", 3, false, false, toks, 64, &n));
    CHECK(n >= 2);

    EXPECT(ember_detokenize(NULL, toks, 1, false, false, buf, sizeof buf, &n),
           EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_detokenize(m, NULL, 1, false, false, buf, sizeof buf, &n),
           EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_detokenize(m, bad, 2, false, false, buf, sizeof buf, &n),
           EMBER_ERR_INVALID_TOKEN);
    CHECK(n == 0);
    OK(ember_detokenize(m, NULL, 0, false, false, buf, sizeof buf, &n));
    CHECK(n == 1 && buf[0] == '\0');
    OK(ember_tokenize(m, text, strlen(text), false, false, toks, 64, &n));
    EXPECT(ember_detokenize(m, toks, 2, false, false, buf, 3, &n), EMBER_ERR_BUFFER_TOO_SMALL);
    CHECK(n == strlen(text) + 1);
    OK(ember_detokenize(m, toks, 2, false, false, buf, n, &n));
    CHECK(strcmp(buf, text) == 0);

    EXPECT(ember_token_to_piece(m, 49152, false, buf, sizeof buf, &n), EMBER_ERR_INVALID_TOKEN);
    EXPECT(ember_token_to_piece(m, UINT32_MAX, true, buf, sizeof buf, &n),
           EMBER_ERR_INVALID_TOKEN);
    EXPECT(ember_token_to_piece(NULL, 1, true, buf, sizeof buf, &n), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_token_to_piece(m, 1, true, buf, 0, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_token_to_piece(m, toks[0], false, buf, 1, &n), EMBER_ERR_BUFFER_TOO_SMALL);
    OK(ember_token_to_piece(m, toks[0], false, buf, sizeof buf, &n));
    CHECK(strcmp(buf, "Hello") == 0);

    EXPECT(ember_token_special(NULL, EMBER_SPECIAL_EOS, &t), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_token_special(m, EMBER_SPECIAL_EOS, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_token_special(m, 999, &t), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_token_special(m, EMBER_SPECIAL_FIM_MID, &t), EMBER_ERR_NOT_FOUND);
    CHECK(t == 99999);
    OK(ember_token_special(m, EMBER_SPECIAL_EOS, &t));
    CHECK(t == 2);

    EXPECT(ember_token_is_eog(m, 49152, &eog), EMBER_ERR_INVALID_TOKEN);
    EXPECT(ember_token_is_eog(m, 2, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_token_is_eog(NULL, 2, &eog), EMBER_ERR_NULL_ARGUMENT);
    OK(ember_token_is_eog(m, 2, &eog));
    CHECK(eog);
    OK(ember_token_is_eog(m, 504, &eog));
    CHECK(!eog);
}

static ember_context *new_ctx(const ember_model *m, uint32_t n_ctx) {
    ember_context_params p;
    ember_context *c = NULL;
    OK(ember_context_params_default(&p, sizeof p));
    p.n_ctx = n_ctx;
    p.n_threads = 1;
    p.n_batch = 16;
    OK(ember_context_new(m, &p, &c));
    REQUIRE(c != NULL);
    return c;
}

static void contexts(const ember_model *m) {
    ember_context_params p;
    ember_context *c = SENTINEL;
    ember_context_info info;
    uint32_t n_past = 99;
    const float *logits = NULL;
    size_t n = 0;
    ember_token toks[20] = {504, 3575, 282, 4649, 314, 7042, 30, 198, 198, 504};
    ember_token bad = 49152;

    ember_context_free(NULL);
    OK(ember_context_params_default(&p, sizeof p));
    EXPECT(ember_context_new(NULL, &p, &c), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_context_new(m, &p, NULL), EMBER_ERR_NULL_ARGUMENT);
    p.kv_type = 7;
    EXPECT(ember_context_new(m, &p, &c), EMBER_ERR_INVALID_ARGUMENT);
    p.kv_type = EMBER_KV_F16;
    p.n_threads = 1000000;
    EXPECT(ember_context_new(m, &p, &c), EMBER_ERR_INVALID_ARGUMENT);
    p.n_threads = 1;
    p.n_batch = 0;
    EXPECT(ember_context_new(m, &p, &c), EMBER_ERR_INVALID_ARGUMENT);
    p.n_batch = 8;
    p.n_ctx = 0xffffffffu;
    EXPECT(ember_context_new(m, &p, &c), EMBER_ERR_INVALID_ARGUMENT);
    p.n_ctx = 8;
    p.struct_size = 4;
    EXPECT(ember_context_new(m, &p, &c), EMBER_ERR_INVALID_ARGUMENT);
    CHECK(c == SENTINEL);

    c = new_ctx(m, 8);
    EXPECT(ember_context_reset(NULL), EMBER_ERR_NULL_ARGUMENT);
    OK(ember_context_reset(c));
    EXPECT(ember_context_truncate(NULL, 0), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_context_truncate(c, 5), EMBER_ERR_INVALID_ARGUMENT);
    OK(ember_context_truncate(c, 0));
    EXPECT(ember_context_n_past(NULL, &n_past), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_context_n_past(c, NULL), EMBER_ERR_NULL_ARGUMENT);
    OK(ember_context_n_past(c, &n_past));
    CHECK(n_past == 0);

    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    EXPECT(ember_context_get_info(NULL, &info), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_context_get_info(c, NULL), EMBER_ERR_NULL_ARGUMENT);
    info.struct_size = 2;
    EXPECT(ember_context_get_info(c, &info), EMBER_ERR_INVALID_ARGUMENT);
    info.struct_size = sizeof info;
    OK(ember_context_get_info(c, &info));
    CHECK(info.n_ctx == 8 && info.n_batch == 8 && info.n_threads == 1 && info.n_vocab == 49152 &&
          info.n_past == 0 && !info.logits_all && info.size_bytes > 0);

    EXPECT(ember_decode(NULL, toks, 1), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_decode(c, NULL, 1), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_decode(c, toks, 0), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_decode(c, NULL, 0), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_decode(c, &bad, 1), EMBER_ERR_INVALID_TOKEN);
    EXPECT(ember_decode(c, toks, 9), EMBER_ERR_CONTEXT_FULL);
    EXPECT(ember_decode(c, toks, (size_t)1 << 62), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_decode_all(c, toks, 2), EMBER_ERR_INVALID_ARGUMENT); /* no logits_all */
    EXPECT(ember_decode_all(NULL, toks, 2), EMBER_ERR_NULL_ARGUMENT);
    OK(ember_context_n_past(c, &n_past));
    CHECK(n_past == 0); /* failed decodes leave nothing behind */

    EXPECT(ember_context_logits(c, &logits, &n), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_context_logits(NULL, &logits, &n), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_context_logits(c, NULL, &n), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_context_logits(c, &logits, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_context_logits_ith(c, 0, &logits, &n), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_context_logits_ith(NULL, 0, &logits, &n), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_context_logits_ith(c, (size_t)-1, &logits, &n), EMBER_ERR_INVALID_ARGUMENT);
    CHECK(logits == NULL && n == 0);

    EXPECT(ember_context_abort(NULL), EMBER_ERR_NULL_ARGUMENT);
    OK(ember_context_abort(c)); /* nothing running: dropped by the next decode */
    OK(ember_decode(c, toks, 2));
    OK(ember_context_logits(c, &logits, &n));
    CHECK(logits != NULL && n == 49152 && isfinite(logits[0]));
    OK(ember_context_logits_ith(c, 0, &logits, &n));
    EXPECT(ember_context_logits_ith(c, 1, &logits, &n), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_decode(c, toks, 7), EMBER_ERR_CONTEXT_FULL);
    OK(ember_context_n_past(c, &n_past));
    CHECK(n_past == 2);
    OK(ember_context_truncate(c, 1));
    OK(ember_context_n_past(c, &n_past));
    CHECK(n_past == 1);

    /* Freed, then NULLed: the handle is simply NULL from now on. */
    ember_context_free(c);
    c = NULL;
    EXPECT(ember_decode(c, toks, 1), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_context_reset(c), EMBER_ERR_NULL_ARGUMENT);
    ember_context_free(c);
}

static void samplers(const ember_model *m, ember_context *c) {
    ember_sampler_params p;
    ember_sampler *s = SENTINEL;
    ember_logit_bias bias[2] = {{5, 1.0f}, {49152, -1.0f}};
    ember_token t = 12345;
    float logits[4] = {0, 1, 2, 3};

    ember_sampler_free(NULL);
    OK(ember_sampler_params_default(&p, sizeof p));
    EXPECT(ember_sampler_new(NULL, &p, &s), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_sampler_new(m, &p, NULL), EMBER_ERR_NULL_ARGUMENT);
    p.logit_bias = bias;
    p.n_logit_bias = 2;
    EXPECT(ember_sampler_new(m, &p, &s), EMBER_ERR_INVALID_TOKEN);
    p.logit_bias = NULL;
    EXPECT(ember_sampler_new(m, &p, &s), EMBER_ERR_NULL_ARGUMENT);
    p.n_logit_bias = 0;
    p.top_p = 2.0f;
    EXPECT(ember_sampler_new(m, &p, &s), EMBER_ERR_INVALID_ARGUMENT);
    p.top_p = 0.9f;
    p.temperature = NAN;
    EXPECT(ember_sampler_new(m, &p, &s), EMBER_ERR_INVALID_ARGUMENT);
    p.temperature = 0.0f;
    p.penalty_last_n = 0xffffffffu;
    EXPECT(ember_sampler_new(m, &p, &s), EMBER_ERR_INVALID_ARGUMENT);
    p.penalty_last_n = 64;
    p.repeat_penalty = -1.0f;
    EXPECT(ember_sampler_new(m, &p, &s), EMBER_ERR_INVALID_ARGUMENT);
    p.repeat_penalty = 1.0f;
    CHECK(s == SENTINEL);
    p.logit_bias = bias;
    p.n_logit_bias = 1;
    OK(ember_sampler_new(m, &p, &s));
    REQUIRE(s != NULL && s != SENTINEL);

    EXPECT(ember_sampler_sample(NULL, c, &t), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_sampler_sample(s, NULL, &t), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_sampler_sample(s, c, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_sampler_sample(s, c, &t), EMBER_ERR_INVALID_ARGUMENT); /* nothing decoded */
    CHECK(t == 12345);
    EXPECT(ember_sampler_sample_logits(s, NULL, 4, &t), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_sampler_sample_logits(s, logits, 0, &t), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_sampler_sample_logits(s, logits, 4, &t), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_sampler_sample_logits(s, logits, 4, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_sampler_accept(s, 49152), EMBER_ERR_INVALID_TOKEN);
    EXPECT(ember_sampler_accept(NULL, 1), EMBER_ERR_NULL_ARGUMENT);
    OK(ember_sampler_accept(s, 1));
    EXPECT(ember_sampler_reset(NULL), EMBER_ERR_NULL_ARGUMENT);
    OK(ember_sampler_reset(s));

    ember_sampler_free(s);
    s = NULL;
    EXPECT(ember_sampler_accept(s, 1), EMBER_ERR_NULL_ARGUMENT);
}

struct reentry {
    ember_context *ctx;
    ember_sampler *sampler;
    int pieces;
    ember_status decode_status, accept_status, generate_status, abort_status;
    char free_error[256];
};

static bool noop_piece(const char *piece, size_t len, void *user) {
    (void)piece;
    (void)len;
    (void)user;
    return true;
}

/* Calls back into ember with the handles that are busy generating, then stops. */
static bool reentrant_piece(const char *piece, size_t len, void *user) {
    struct reentry *r = user;
    ember_token t = 1;
    CHECK(piece[len] == '\0');
    r->pieces++;
    r->decode_status = ember_decode(r->ctx, &t, 1);
    r->accept_status = ember_sampler_accept(r->sampler, 1);
    r->generate_status = ember_generate(r->ctx, r->sampler, "x", 1, NULL, noop_piece, NULL, NULL);
    ember_context_free(r->ctx); /* refused: the context is in use */
    snprintf(r->free_error, sizeof r->free_error, "%s", ember_last_error());
    r->abort_status = ember_context_abort(r->ctx);
    return false;
}

static void generation(const ember_model *m) {
    ember_context *c = new_ctx(m, 32);
    ember_sampler *s = NULL;
    ember_sampler_params sp;
    ember_generate_params gp;
    ember_generate_result res;
    struct reentry r;
    const char *stops_with_null[2] = {"ok", NULL};
    const char *stops_empty[1] = {""};
    const char *stops_bad_utf8[1] = {"\xff"};
    uint32_t n_past = 0;
    const char *long_prompt =
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty, and then once more: one two "
        "three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen";

    OK(ember_sampler_params_default(&sp, sizeof sp));
    sp.temperature = 0.0f;
    OK(ember_sampler_new(m, &sp, &s));
    OK(ember_generate_params_default(&gp, sizeof gp));
    gp.max_tokens = 2;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;

    EXPECT(ember_generate(NULL, s, "Hi", 2, &gp, noop_piece, NULL, &res), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_generate(c, NULL, "Hi", 2, &gp, noop_piece, NULL, &res), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_generate(c, s, NULL, 2, &gp, noop_piece, NULL, &res), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_generate(c, s, "Hi", 2, &gp, NULL, NULL, &res), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_generate(c, s, "\xff", 1, &gp, noop_piece, NULL, &res), EMBER_ERR_INVALID_UTF8);
    /* An empty prompt in an empty context has nothing to continue. */
    EXPECT(ember_generate(c, s, NULL, 0, &gp, noop_piece, NULL, &res),
           EMBER_ERR_INVALID_ARGUMENT);
    gp.stop = stops_with_null;
    gp.n_stop = 2;
    EXPECT(ember_generate(c, s, "Hi", 2, &gp, noop_piece, NULL, &res), EMBER_ERR_NULL_ARGUMENT);
    gp.stop = NULL;
    EXPECT(ember_generate(c, s, "Hi", 2, &gp, noop_piece, NULL, &res), EMBER_ERR_NULL_ARGUMENT);
    gp.stop = stops_empty;
    gp.n_stop = 1;
    EXPECT(ember_generate(c, s, "Hi", 2, &gp, noop_piece, NULL, &res),
           EMBER_ERR_INVALID_ARGUMENT);
    gp.stop = stops_bad_utf8;
    EXPECT(ember_generate(c, s, "Hi", 2, &gp, noop_piece, NULL, &res), EMBER_ERR_INVALID_UTF8);
    gp.stop = NULL;
    gp.n_stop = 0;
    gp.struct_size = 1;
    EXPECT(ember_generate(c, s, "Hi", 2, &gp, noop_piece, NULL, &res),
           EMBER_ERR_INVALID_ARGUMENT);
    gp.struct_size = sizeof gp;
    res.struct_size = 0;
    EXPECT(ember_generate(c, s, "Hi", 2, &gp, noop_piece, NULL, &res),
           EMBER_ERR_INVALID_ARGUMENT);
    res.struct_size = sizeof res;
    /* A prompt longer than the context. */
    EXPECT(ember_generate(c, s, long_prompt, strlen(long_prompt), &gp, noop_piece, NULL, &res),
           EMBER_ERR_CONTEXT_FULL);
    OK(ember_context_n_past(c, &n_past));
    CHECK(n_past == 0);

    /* Re-entering ember from the piece callback with the busy handles is refused. */
    memset(&r, 0, sizeof r);
    r.ctx = c;
    r.sampler = s;
    OK(ember_generate(c, s, "Hi", 2, &gp, reentrant_piece, &r, &res));
    CHECK(r.pieces == 1);
    CHECK(r.decode_status == EMBER_ERR_BUSY);
    CHECK(r.accept_status == EMBER_ERR_BUSY);
    CHECK(r.generate_status == EMBER_ERR_BUSY);
    CHECK(r.abort_status == EMBER_OK);
    CHECK(strstr(r.free_error, "in use") != NULL);
    CHECK(res.stop_reason == EMBER_STOP_CALLBACK && res.generated_tokens == 1);
    /* The context survived all of that and is usable. */
    OK(ember_context_n_past(c, &n_past));
    CHECK(n_past >= 1);

    ember_sampler_free(s);
    ember_context_free(c);
}

static void states(const ember_model *m) {
    ember_context *c = new_ctx(m, 8);
    ember_token toks[2] = {504, 3575};
    unsigned char *state;
    unsigned char small[16];
    size_t size = 0, needed = 0;
    uint32_t n_past = 0;
    char path[4200], bad_path[4200];
    FILE *f;

    EXPECT(ember_state_size(NULL, &size), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_state_size(c, NULL), EMBER_ERR_NULL_ARGUMENT);
    OK(ember_decode(c, toks, 2));
    OK(ember_state_size(c, &size));
    CHECK(size > 1000);

    EXPECT(ember_state_save(NULL, small, sizeof small, &needed), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_state_save(c, small, sizeof small, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_state_save(c, NULL, 10, &needed), EMBER_ERR_NULL_ARGUMENT);
    OK(ember_state_save(c, NULL, 0, &needed));
    CHECK(needed == size);
    EXPECT(ember_state_save(c, small, sizeof small, &needed), EMBER_ERR_BUFFER_TOO_SMALL);
    CHECK(needed == size);
    state = malloc(size);
    REQUIRE(state != NULL);
    OK(ember_state_save(c, state, size, &needed));

    EXPECT(ember_state_load(NULL, state, size), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_state_load(c, NULL, size), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_state_load(c, NULL, 0), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_state_load(c, state, 0), EMBER_ERR_INVALID_STATE);
    EXPECT(ember_state_load(c, state, size - 1), EMBER_ERR_INVALID_STATE);
    EXPECT(ember_state_load(c, state, 40), EMBER_ERR_INVALID_STATE);
    state[size / 2] ^= 0x40; /* corrupted KV data: the checksum catches it */
    EXPECT(ember_state_load(c, state, size), EMBER_ERR_INVALID_STATE);
    state[size / 2] ^= 0x40;
    state[0] = 'X'; /* not a state */
    EXPECT(ember_state_load(c, state, size), EMBER_ERR_INVALID_STATE);
    state[0] = 'E';
    memset(small, 0xff, sizeof small);
    EXPECT(ember_state_load(c, small, sizeof small), EMBER_ERR_INVALID_STATE);

    /* Failed loads left the context alone; a good state loads. */
    OK(ember_context_reset(c));
    EXPECT(ember_state_load(c, state, size - 8), EMBER_ERR_INVALID_STATE);
    OK(ember_context_n_past(c, &n_past));
    CHECK(n_past == 0);
    OK(ember_state_load(c, state, size));
    OK(ember_context_n_past(c, &n_past));
    CHECK(n_past == 2);

    tmp_path("state.bin", path, sizeof path);
    tmp_path("no-such-dir/state.bin", bad_path, sizeof bad_path);
    EXPECT(ember_state_save_file(NULL, path), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_state_save_file(c, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_state_save_file(c, bad_path), EMBER_ERR_IO);
    OK(ember_state_save_file(c, path));
    EXPECT(ember_state_load_file(NULL, path), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_state_load_file(c, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_state_load_file(c, bad_path), EMBER_ERR_IO);
    EXPECT(ember_state_load_file(c, g_tmp), EMBER_ERR_IO); /* a directory */
    /* An endless file is refused after reading no more than a state can be. */
    EXPECT(ember_state_load_file(c, "/dev/zero"), EMBER_ERR_INVALID_STATE);
    OK(ember_context_reset(c));
    OK(ember_state_load_file(c, path));
    OK(ember_context_n_past(c, &n_past));
    CHECK(n_past == 2);
    /* A truncated file. */
    f = fopen(path, "wb");
    REQUIRE(f != NULL);
    fwrite(state, 1, size / 3, f);
    fclose(f);
    EXPECT(ember_state_load_file(c, path), EMBER_ERR_INVALID_STATE);

    /* A state is refused by a context with a different KV type. */
    {
        ember_context_params p;
        ember_context *c32 = NULL;
        OK(ember_context_params_default(&p, sizeof p));
        p.n_ctx = 8;
        p.n_threads = 1;
        p.kv_type = EMBER_KV_F32;
        OK(ember_context_new(m, &p, &c32));
        EXPECT(ember_state_load(c32, state, size), EMBER_ERR_INVALID_STATE);
        ember_context_free(c32);
    }
    /* ...and by a context too small for its positions. */
    {
        ember_context *c1 = new_ctx(m, 1);
        EXPECT(ember_state_load(c1, state, size), EMBER_ERR_INVALID_STATE);
        ember_context_free(c1);
    }

    free(state);
    ember_context_free(c);
}

/* The model handle can go before the contexts and samplers made from it. */
static void model_freed_first(void) {
    ember_model *m = NULL;
    ember_context *c;
    ember_sampler *s = NULL;
    ember_token t = 0, in = 504;
    size_t n = 0;
    OK(ember_model_load(g_model_path, NULL, &m));
    REQUIRE(m != NULL);
    c = new_ctx(m, 4);
    OK(ember_sampler_new(m, NULL, &s));
    ember_model_free(m);
    m = NULL;
    EXPECT(ember_tokenize(m, "a", 1, false, false, NULL, 0, &n), EMBER_ERR_NULL_ARGUMENT);
    OK(ember_decode(c, &in, 1));
    OK(ember_sampler_sample(s, c, &t));
    CHECK(t < 49152);
    ember_sampler_free(s);
    ember_context_free(c);
}

struct chat_reentry {
    ember_chat *chat;
    ember_sampler *sampler;
    int pieces;
    ember_status add_status, generate_status, render_status, abort_status;
    char free_error[256];
};

static bool chat_reentrant_piece(const char *piece, size_t len, void *user) {
    struct chat_reentry *r = user;
    size_t needed = 0;
    (void)piece;
    (void)len;
    r->pieces++;
    r->add_status = ember_chat_add_message(r->chat, "user", "x", 1);
    r->generate_status = ember_chat_generate(r->chat, r->sampler, NULL, noop_piece, NULL, NULL);
    r->render_status = ember_chat_render(r->chat, true, NULL, 0, &needed);
    ember_chat_free(r->chat); /* refused: in use */
    snprintf(r->free_error, sizeof r->free_error, "%s", ember_last_error());
    r->abort_status = ember_chat_abort(r->chat);
    return true; /* the abort stops it */
}

static void chats(const ember_model *m) {
    ember_chat *ch = NULL;
    ember_chat_params chp;
    ember_context_params cp;
    ember_sampler *s = NULL;
    ember_sampler_params sp;
    ember_generate_params gp;
    ember_chat_result res;
    ember_chat_info info;
    struct chat_reentry r;
    char buf[64];
    size_t needed = 7;
    const char *msg;

    OK(ember_chat_params_default(&chp, sizeof chp));
    EXPECT(ember_chat_params_default(NULL, sizeof chp), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_chat_params_default(&chp, 3), EMBER_ERR_INVALID_ARGUMENT);
    OK(ember_context_params_default(&cp, sizeof cp));
    cp.n_ctx = 256;
    EXPECT(ember_chat_new(NULL, &cp, &chp, &ch), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_chat_new(m, &cp, &chp, NULL), EMBER_ERR_NULL_ARGUMENT);
    CHECK(ch == NULL);
    /* Bad templates: the template's own message and line. */
    chp.chat_template = "{% for m in messages %}\n{{ m.content }\n{% endfor %}";
    EXPECT(ember_chat_new(m, &cp, &chp, &ch), EMBER_ERR_TEMPLATE);
    CHECK(strstr(ember_last_error(), "syntax error") && strstr(ember_last_error(), "line 2"));
    CHECK(ch == NULL);
    chp.chat_template = "\xff{{ x }}";
    EXPECT(ember_chat_new(m, &cp, &chp, &ch), EMBER_ERR_INVALID_UTF8);
    /* An unknown filter is found when the template renders. */
    chp.chat_template = "ok\n{{ messages | no_such_filter }}";
    OK(ember_chat_new(m, &cp, &chp, &ch));
    EXPECT(ember_chat_render(ch, true, buf, sizeof buf, &needed), EMBER_ERR_TEMPLATE);
    CHECK(strstr(ember_last_error(), "unknown filter") && strstr(ember_last_error(), "line 2"));
    ember_chat_free(ch);
    ch = NULL;
    chp.chat_template = NULL;
    chp.tools_json = "[{\"type\": ";
    EXPECT(ember_chat_new(m, &cp, &chp, &ch), EMBER_ERR_INVALID_ARGUMENT);
    chp.tools_json = "{}";
    EXPECT(ember_chat_new(m, &cp, &chp, &ch), EMBER_ERR_INVALID_ARGUMENT);
    chp.tools_json = NULL;
    chp.template_vars_json = "[1]";
    EXPECT(ember_chat_new(m, &cp, &chp, &ch), EMBER_ERR_INVALID_ARGUMENT);
    chp.template_vars_json = NULL;
    chp.struct_size = 2;
    EXPECT(ember_chat_new(m, &cp, &chp, &ch), EMBER_ERR_INVALID_ARGUMENT);
    chp.struct_size = sizeof chp;
    /* A template that raises, checked when it renders. */
    chp.chat_template = "{% if messages[0].role != 'system' %}\n"
                        "{{ raise_exception('System role first, please') }}{% endif %}";
    OK(ember_chat_new(m, &cp, &chp, &ch));
    OK(ember_chat_add_message(ch, "user", "hi", 2));
    EXPECT(ember_chat_render(ch, true, buf, sizeof buf, &needed), EMBER_ERR_TEMPLATE);
    CHECK(strstr(ember_last_error(), "System role first, please") &&
          strstr(ember_last_error(), "line 2"));
    CHECK(needed == 0);
    ember_chat_free(ch);
    /* A template that never ends fails within its fuel. */
    chp.chat_template = "{% for i in range(100000) %}{% for j in range(100000) %}"
                        "{% endfor %}{% endfor %}";
    OK(ember_chat_new(m, &cp, &chp, &ch));
    EXPECT(ember_chat_render(ch, true, buf, sizeof buf, &needed), EMBER_ERR_TEMPLATE);
    CHECK(strstr(ember_last_error(), "fuel") != NULL);
    ember_chat_free(ch);
    ch = NULL;
    chp.chat_template = NULL;

    OK(ember_chat_new(m, NULL, NULL, &ch));
    ember_chat_free(ch);
    OK(ember_chat_new(m, &cp, &chp, &ch));
    REQUIRE(ch != NULL);
    OK(ember_sampler_params_default(&sp, sizeof sp));
    sp.temperature = 0.0f;
    OK(ember_sampler_new(m, &sp, &s));
    OK(ember_generate_params_default(&gp, sizeof gp));
    gp.max_tokens = 4;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;

    EXPECT(ember_chat_add_message(NULL, "user", "hi", 2), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_chat_add_message(ch, NULL, "hi", 2), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_chat_add_message(ch, "user", NULL, 2), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_chat_add_message(ch, "", "hi", 2), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_chat_add_message(ch, "user", "\xff\xfe", 2), EMBER_ERR_INVALID_UTF8);
    EXPECT(ember_chat_add_message(ch, "us\xc3", "hi", 2), EMBER_ERR_INVALID_UTF8);
    EXPECT(ember_chat_add_message_json(ch, NULL, 3), EMBER_ERR_NULL_ARGUMENT);
    msg = "{\"content\": \"no role\"}";
    EXPECT(ember_chat_add_message_json(ch, msg, strlen(msg)), EMBER_ERR_INVALID_ARGUMENT);
    msg = "[\"role\"]";
    EXPECT(ember_chat_add_message_json(ch, msg, strlen(msg)), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_chat_add_message_json(ch, "{\"role\": \"u\xff\"}", 13), EMBER_ERR_INVALID_UTF8);
    /* Nothing to reply to yet. */
    EXPECT(ember_chat_generate(ch, s, &gp, noop_piece, NULL, &res), EMBER_ERR_INVALID_ARGUMENT);
    OK(ember_chat_add_message(ch, "user", "Hi", 2));
    EXPECT(ember_chat_generate(NULL, s, &gp, noop_piece, NULL, &res), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_chat_generate(ch, NULL, &gp, noop_piece, NULL, &res), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_chat_generate(ch, s, &gp, NULL, NULL, &res), EMBER_ERR_NULL_ARGUMENT);
    res.struct_size = 0;
    EXPECT(ember_chat_generate(ch, s, &gp, noop_piece, NULL, &res), EMBER_ERR_INVALID_ARGUMENT);
    res.struct_size = sizeof res;
    EXPECT(ember_chat_render(NULL, true, buf, sizeof buf, &needed), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_chat_render(ch, true, buf, sizeof buf, NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_chat_render(ch, true, buf, 4, &needed), EMBER_ERR_BUFFER_TOO_SMALL);
    CHECK(needed > 4);
    OK(ember_chat_render(ch, true, NULL, 0, &needed));
    EXPECT(ember_chat_message_json(ch, 5, buf, sizeof buf, &needed), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_chat_get_info(ch, NULL), EMBER_ERR_NULL_ARGUMENT);
    memset(&info, 0, sizeof info);
    EXPECT(ember_chat_get_info(ch, &info), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_chat_reset(NULL), EMBER_ERR_NULL_ARGUMENT);
    EXPECT(ember_chat_abort(NULL), EMBER_ERR_NULL_ARGUMENT);

    /* Re-entering the busy session from the piece callback is refused; abort works. */
    memset(&r, 0, sizeof r);
    r.chat = ch;
    r.sampler = s;
    gp.max_tokens = 16;
    EXPECT(ember_chat_generate(ch, s, &gp, chat_reentrant_piece, &r, &res), EMBER_ERR_ABORTED);
    CHECK(r.pieces >= 1);
    CHECK(r.add_status == EMBER_ERR_BUSY && r.generate_status == EMBER_ERR_BUSY);
    CHECK(r.render_status == EMBER_ERR_BUSY && r.abort_status == EMBER_OK);
    CHECK(strstr(r.free_error, "in use") != NULL);
    /* Usable afterwards: the partial reply is the last message. */
    info.struct_size = sizeof info;
    OK(ember_chat_get_info(ch, &info));
    CHECK(info.n_messages == 2);
    OK(ember_chat_generate(ch, s, &gp, noop_piece, NULL, NULL));
    ember_chat_free(ch);
    ember_chat_free(NULL);
    ember_sampler_free(s);
}

int main(int argc, char **argv) {
    ember_model *m = NULL;
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.gguf SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    g_model_path = argv[1];
    snprintf(g_tmp, sizeof g_tmp, "%s", argv[2]);

    version_and_errors();
    params_structs();
    model_loading();
    OK(ember_model_load(g_model_path, NULL, &m));
    REQUIRE(m != NULL);
    model_queries(m);
    estimates(m);
    tokens(m);
    contexts(m);
    {
        ember_context *c = new_ctx(m, 4);
        samplers(m, c);
        ember_context_free(c);
    }
    generation(m);
    chats(m);
    states(m);
    ember_model_free(m);
    m = NULL;
    EXPECT(ember_model_get_info(m, NULL), EMBER_ERR_NULL_ARGUMENT);
    model_freed_first();
    return report("misuse");
}
