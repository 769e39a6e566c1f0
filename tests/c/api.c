/*
 * The C ABI doing real work on SmolLM2: loading (by path, by file descriptor inside a
 * larger "bundle" file, with progress), metadata, tokens, decoding and logits, samplers,
 * generation with stop strings and callbacks, state save/load, abort from another
 * thread, a full context with and without context shift.
 *
 * Usage: api MODEL.gguf SCRATCH_DIR
 */
#define _POSIX_C_SOURCE 200809L /* open, nanosleep, pthreads under -std=c99 */

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define N_VOCAB 49152

static const char *g_model_path;
static char g_tmp[4096];

/* "The capital of France is" as llama.cpp tokenizes it for SmolLM2 (no BOS: the model's
   metadata does not ask for one). */
static const ember_token PROMPT_IDS[5] = {504, 3575, 282, 4649, 314};
static const char *PROMPT = "The capital of France is";

static ember_token argmax(const float *l, size_t n) {
    size_t i, best = 0;
    for (i = 1; i < n; i++) {
        if (l[i] > l[best]) best = i;
    }
    return (ember_token)best;
}

static ember_context *new_ctx(const ember_model *m, uint32_t n_ctx, bool logits_all) {
    ember_context_params p;
    ember_context *c = NULL;
    OK(ember_context_params_default(&p, sizeof p));
    p.n_ctx = n_ctx;
    p.n_threads = 2;
    p.logits_all = logits_all;
    OK(ember_context_new(m, &p, &c));
    REQUIRE(c != NULL);
    return c;
}

static ember_sampler *greedy_sampler(const ember_model *m) {
    ember_sampler_params p;
    ember_sampler *s = NULL;
    OK(ember_sampler_params_default(&p, sizeof p));
    p.temperature = 0.0f;
    OK(ember_sampler_new(m, &p, &s));
    REQUIRE(s != NULL);
    return s;
}

struct progress_log {
    float values[16];
    int n;
};

static bool log_progress(float progress, void *user) {
    struct progress_log *log = user;
    if (log->n < 16) log->values[log->n++] = progress;
    return true;
}

static void load_by_fd_inside_a_bundle(const ember_model *by_path) {
    /* An app bundle: the model stored at an odd offset between other bytes. */
    char bundle[4200];
    FILE *in, *out;
    char buf[1 << 16];
    size_t n, model_len = 0;
    const long offset = 1001;
    int fd;
    ember_model *m = NULL;
    ember_model_info a, b;
    ember_token toks[16];
    size_t n_toks = 0;

    snprintf(bundle, sizeof bundle, "%s/bundle.bin", g_tmp);
    in = fopen(g_model_path, "rb");
    out = fopen(bundle, "wb");
    REQUIRE(in != NULL && out != NULL);
    memset(buf, 'A', (size_t)offset);
    fwrite(buf, 1, (size_t)offset, out);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        fwrite(buf, 1, n, out);
        model_len += n;
    }
    fputs("trailing bytes of some other asset", out);
    fclose(in);
    fclose(out);

    fd = open(bundle, O_RDONLY);
    REQUIRE(fd >= 0);
    OK(ember_model_load_fd(fd, (uint64_t)offset, model_len, NULL, &m));
    close(fd);
    REQUIRE(m != NULL);
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.struct_size = b.struct_size = sizeof a;
    OK(ember_model_get_info(m, &a));
    OK(ember_model_get_info(by_path, &b));
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    OK(ember_tokenize(m, PROMPT, strlen(PROMPT), true, false, toks, 16, &n_toks));
    CHECK(n_toks == 5 && memcmp(toks, PROMPT_IDS, sizeof PROMPT_IDS) == 0);
    ember_model_free(m);
    remove(bundle);
}

static void metadata(const ember_model *m) {
    char buf[256];
    char *tmpl;
    size_t n = 0;
    ember_model_info info;

    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    OK(ember_model_get_info(m, &info));
    CHECK(info.n_vocab == N_VOCAB && info.n_embd == 576 && info.n_head == 9 &&
          info.n_head_kv == 3 && info.n_ff == 1536);
    CHECK(info.n_params > 100000000ull && info.n_params < 200000000ull);
    CHECK(info.size_bytes > 50000000ull);

    OK(ember_model_architecture(m, buf, sizeof buf, &n));
    CHECK(strcmp(buf, "llama") == 0);
    OK(ember_model_meta(m, "general.architecture", buf, sizeof buf, &n));
    CHECK(strcmp(buf, "llama") == 0);
    OK(ember_model_meta(m, "tokenizer.ggml.pre", buf, sizeof buf, &n));
    CHECK(strcmp(buf, "smollm") == 0);

    OK(ember_model_chat_template(m, NULL, 0, &n));
    tmpl = malloc(n);
    REQUIRE(tmpl != NULL);
    OK(ember_model_chat_template(m, tmpl, n, &n));
    CHECK(strlen(tmpl) + 1 == n);
    CHECK(strstr(tmpl, "<|im_start|>") != NULL);
    free(tmpl);
}

static void tokens(const ember_model *m) {
    ember_token toks[32], t;
    size_t n = 0, len = 0;
    char buf[256];
    bool eog = false;

    OK(ember_tokenize(m, PROMPT, strlen(PROMPT), true, true, toks, 32, &n));
    CHECK(n == 5 && memcmp(toks, PROMPT_IDS, sizeof PROMPT_IDS) == 0);
    OK(ember_detokenize(m, toks, n, false, false, buf, sizeof buf, &len));
    CHECK(strcmp(buf, PROMPT) == 0 && len == strlen(PROMPT) + 1);

    /* Special tokens: parsed as one token only when asked. */
    OK(ember_tokenize(m, "<|im_start|>user", 16, false, true, toks, 32, &n));
    CHECK(n == 2 && toks[0] == 1);
    OK(ember_tokenize(m, "<|im_start|>user", 16, false, false, toks, 32, &n));
    CHECK(n > 2);
    OK(ember_token_to_piece(m, 1, true, buf, sizeof buf, &len));
    CHECK(strcmp(buf, "<|im_start|>") == 0);
    OK(ember_token_to_piece(m, 1, false, buf, sizeof buf, &len));
    CHECK(strcmp(buf, "") == 0 && len == 1);
    OK(ember_token_special(m, EMBER_SPECIAL_BOS, &t));
    CHECK(t == 1);
    OK(ember_token_special(m, EMBER_SPECIAL_EOS, &t));
    CHECK(t == 2);
    OK(ember_token_is_eog(m, t, &eog));
    CHECK(eog);

    /* Multi-byte UTF-8 survives the round trip. */
    {
        const char *text = "Grüße, 世界! 🙂";
        OK(ember_tokenize(m, text, strlen(text), false, false, toks, 32, &n));
        OK(ember_detokenize(m, toks, n, false, false, buf, sizeof buf, &len));
        CHECK(strcmp(buf, text) == 0);
    }
}

struct collect {
    char text[4096];
    size_t len;
    int pieces;
    int stop_after; /* stop after this many pieces (0: never) */
    ember_context *abort_ctx; /* abort this context from inside the callback */
    bool bad_utf8;
};

static bool is_whole_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t k = s[i] < 0x80 ? 1 : s[i] < 0xe0 ? 2 : s[i] < 0xf0 ? 3 : 4;
        if (i + k > n) return false;
        i += k;
    }
    return true;
}

static bool collect_piece(const char *piece, size_t len, void *user) {
    struct collect *c = user;
    if (piece[len] != '\0' || !is_whole_utf8((const unsigned char *)piece, len))
        c->bad_utf8 = true;
    if (c->len + len < sizeof c->text) {
        memcpy(c->text + c->len, piece, len);
        c->len += len;
        c->text[c->len] = '\0';
    }
    c->pieces++;
    if (c->abort_ctx) ember_context_abort(c->abort_ctx);
    return !(c->stop_after > 0 && c->pieces >= c->stop_after);
}

/* Greedy generation through ember_generate() and by hand must agree. */
static void generation(const ember_model *m, char *greedy_text, size_t cap) {
    ember_context *c = new_ctx(m, 64, false);
    ember_sampler *s = greedy_sampler(m);
    ember_generate_params gp;
    ember_generate_result res;
    struct collect col;
    ember_token by_hand[8];
    const float *logits;
    size_t n_logits, len = 0;
    char text[512];
    uint32_t n_past = 0;
    int i;

    /* By hand: decode, argmax, decode... */
    OK(ember_decode(c, PROMPT_IDS, 5));
    for (i = 0; i < 6; i++) {
        OK(ember_context_logits(c, &logits, &n_logits));
        CHECK(n_logits == N_VOCAB);
        by_hand[i] = argmax(logits, n_logits);
        {
            ember_token t = 0;
            OK(ember_sampler_sample(s, c, &t));
            CHECK(t == by_hand[i]);
        }
        OK(ember_decode(c, &by_hand[i], 1));
    }
    OK(ember_detokenize(m, by_hand, 6, false, false, text, sizeof text, &len));

    /* The same through ember_generate(). */
    OK(ember_context_reset(c));
    OK(ember_generate_params_default(&gp, sizeof gp));
    gp.max_tokens = 6;
    memset(&col, 0, sizeof col);
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    OK(ember_generate(c, s, PROMPT, strlen(PROMPT), &gp, collect_piece, &col, &res));
    CHECK(!col.bad_utf8);
    CHECK(strcmp(col.text, text) == 0);
    if (strcmp(col.text, text) != 0)
        fprintf(stderr, "  generate: \"%s\"\n  by hand:  \"%s\"\n", col.text, text);
    CHECK(res.stop_reason == EMBER_STOP_MAX_TOKENS);
    CHECK(res.prompt_tokens == 5 && res.generated_tokens == 6);
    CHECK(res.prompt_ms > 0.0 && res.generate_ms > 0.0);
    OK(ember_context_n_past(c, &n_past));
    CHECK(n_past == 5 + 6);
    snprintf(greedy_text, cap, "%s", col.text);
    printf("greedy: %s|%s\n", PROMPT, col.text);

    /* A stop string in the middle of that text cuts it there. */
    if (strlen(text) >= 6) {
        char stop[4];
        const char *stops[2] = {"this never appears", stop};
        memcpy(stop, text + 3, 3);
        stop[3] = '\0';
        gp.stop = stops;
        gp.n_stop = 2;
        memset(&col, 0, sizeof col);
        OK(ember_context_reset(c));
        OK(ember_generate(c, s, PROMPT, strlen(PROMPT), &gp, collect_piece, &col, &res));
        CHECK(res.stop_reason == EMBER_STOP_STRING);
        CHECK(strlen(col.text) <= 3 && strncmp(col.text, text, strlen(col.text)) == 0);
        CHECK(strstr(col.text, stop) == NULL);
        gp.stop = NULL;
        gp.n_stop = 0;
    }

    /* The callback stops it. */
    memset(&col, 0, sizeof col);
    col.stop_after = 1;
    OK(ember_context_reset(c));
    OK(ember_generate(c, s, PROMPT, strlen(PROMPT), &gp, collect_piece, &col, &res));
    CHECK(res.stop_reason == EMBER_STOP_CALLBACK && col.pieces == 1);

    /* An abort requested from the callback (between two tokens) is not lost. */
    memset(&col, 0, sizeof col);
    col.abort_ctx = c;
    OK(ember_context_reset(c));
    EXPECT(ember_generate(c, s, PROMPT, strlen(PROMPT), &gp, collect_piece, &col, &res),
           EMBER_ERR_ABORTED);
    CHECK(col.pieces >= 1);
    OK(ember_context_n_past(c, &n_past));
    CHECK(n_past == 5); /* the prompt stays; the interrupted step left nothing */

    /* Continuing the same conversation with an empty prompt. */
    memset(&col, 0, sizeof col);
    gp.max_tokens = 1;
    OK(ember_generate(c, s, NULL, 0, &gp, collect_piece, &col, &res));
    CHECK(res.prompt_tokens == 0 && res.generated_tokens == 1);

    ember_sampler_free(s);
    ember_context_free(c);
}

static void full_context(const ember_model *m) {
    ember_context *c = new_ctx(m, 7, false);
    ember_sampler *s = greedy_sampler(m);
    ember_generate_params gp;
    ember_generate_result res;
    struct collect col;

    OK(ember_generate_params_default(&gp, sizeof gp));
    gp.max_tokens = 4;
    memset(&col, 0, sizeof col);
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    EXPECT(ember_generate(c, s, PROMPT, strlen(PROMPT), &gp, collect_piece, &col, &res),
           EMBER_ERR_CONTEXT_FULL);
    OK(ember_context_reset(c));
    gp.context_shift = true;
    gp.n_keep = 1;
    memset(&col, 0, sizeof col);
    OK(ember_generate(c, s, PROMPT, strlen(PROMPT), &gp, collect_piece, &col, &res));
    CHECK(res.generated_tokens == 4 && res.stop_reason == EMBER_STOP_MAX_TOKENS);
    ember_sampler_free(s);
    ember_context_free(c);
}

static void batch_logits(const ember_model *m) {
    ember_context *all = new_ctx(m, 32, true);
    ember_context *last = new_ctx(m, 32, false);
    const float *la, *lb;
    size_t na, nb, i;
    float maxdiff = 0.0f;

    OK(ember_decode_all(all, PROMPT_IDS, 5));
    OK(ember_decode(last, PROMPT_IDS, 5));
    OK(ember_context_logits_ith(all, 4, &la, &na));
    OK(ember_context_logits(last, &lb, &nb));
    CHECK(na == N_VOCAB && nb == N_VOCAB);
    for (i = 0; i < na; i++) {
        float d = fabsf(la[i] - lb[i]);
        if (d > maxdiff) maxdiff = d;
    }
    CHECK(maxdiff < 1e-3f);
    /* Position 0's logits are a different distribution. */
    OK(ember_context_logits_ith(all, 0, &la, &na));
    CHECK(argmax(la, na) != argmax(lb, nb) || la[0] != lb[0]);
    EXPECT(ember_context_logits_ith(all, 5, &la, &na), EMBER_ERR_INVALID_ARGUMENT);
    ember_context_free(all);
    ember_context_free(last);
}

static void samplers(const ember_model *m) {
    ember_context *c = new_ctx(m, 16, false);
    ember_sampler_params p;
    ember_sampler *a = NULL, *b = NULL, *banned = NULL;
    ember_token ta[8], tb[8], t, best;
    const float *logits;
    size_t n;
    ember_logit_bias ban;
    int i;

    OK(ember_decode(c, PROMPT_IDS, 5));
    OK(ember_context_logits(c, &logits, &n));
    best = argmax(logits, n);

    OK(ember_sampler_params_default(&p, sizeof p));
    p.temperature = 1.5f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 1234;
    OK(ember_sampler_new(m, &p, &a));
    OK(ember_sampler_new(m, &p, &b));
    for (i = 0; i < 8; i++) {
        OK(ember_sampler_sample(a, c, &ta[i]));
        OK(ember_sampler_sample_logits(b, logits, n, &tb[i]));
    }
    CHECK(memcmp(ta, tb, sizeof ta) == 0);
    OK(ember_sampler_reset(a));
    OK(ember_sampler_sample(a, c, &t));
    CHECK(t == ta[0]);

    /* A banned token is never chosen, even greedily. */
    OK(ember_sampler_params_default(&p, sizeof p));
    p.temperature = 0.0f;
    ban.token = best;
    ban.bias = -INFINITY;
    p.logit_bias = &ban;
    p.n_logit_bias = 1;
    OK(ember_sampler_new(m, &p, &banned));
    OK(ember_sampler_sample(banned, c, &t));
    CHECK(t != best);

    /* Penalties see accepted tokens. */
    {
        ember_sampler *pen = NULL;
        OK(ember_sampler_params_default(&p, sizeof p));
        p.temperature = 0.0f;
        p.presence_penalty = 1000.0f;
        OK(ember_sampler_new(m, &p, &pen));
        OK(ember_sampler_sample(pen, c, &t));
        CHECK(t == best);
        OK(ember_sampler_accept(pen, best));
        OK(ember_sampler_sample(pen, c, &t));
        CHECK(t != best);
        ember_sampler_free(pen);
    }

    ember_sampler_free(a);
    ember_sampler_free(b);
    ember_sampler_free(banned);
    ember_context_free(c);
}

static void states(const ember_model *m) {
    ember_context *c = new_ctx(m, 32, false);
    ember_context *d = new_ctx(m, 32, false);
    ember_sampler *s = greedy_sampler(m);
    unsigned char *state;
    size_t size = 0;
    ember_token t1, t2, t3;
    const float *la, *lb;
    size_t na, nb;
    char path[4200];

    OK(ember_decode(c, PROMPT_IDS, 5));
    OK(ember_state_save(c, NULL, 0, &size));
    state = malloc(size);
    REQUIRE(state != NULL);
    OK(ember_state_save(c, state, size, &size));
    OK(ember_sampler_sample(s, c, &t1));
    OK(ember_decode(c, &t1, 1));
    OK(ember_sampler_sample(s, c, &t2));

    /* Restored into another context: the same logits, the same continuation. */
    OK(ember_state_load(d, state, size));
    OK(ember_context_logits(d, &lb, &nb));
    OK(ember_sampler_sample(s, d, &t3));
    CHECK(t3 == t1);
    OK(ember_decode(d, &t1, 1));
    OK(ember_context_logits(d, &lb, &nb));
    OK(ember_context_logits(c, &la, &na));
    CHECK(na == nb && memcmp(la, lb, na * sizeof *la) == 0);

    /* Through a file, rolling c back to the saved point. */
    snprintf(path, sizeof path, "%s/api-state.bin", g_tmp);
    OK(ember_state_load(c, state, size));
    OK(ember_state_save_file(c, path));
    OK(ember_context_reset(d));
    OK(ember_state_load_file(d, path));
    OK(ember_sampler_sample(s, d, &t3));
    CHECK(t3 == t1);
    remove(path);

    free(state);
    ember_sampler_free(s);
    ember_context_free(c);
    ember_context_free(d);
}

struct aborter {
    ember_context *ctx;
    int delay_ms;
};

static void *abort_later(void *arg) {
    struct aborter *a = arg;
    struct timespec ts;
    ts.tv_sec = 0;
    ts.tv_nsec = (long)a->delay_ms * 1000000L;
    nanosleep(&ts, NULL);
    ember_context_abort(a->ctx);
    CHECK(ember_last_error()[0] == '\0');
    return NULL;
}

static void abort_from_another_thread(const ember_model *m) {
    ember_context *c = new_ctx(m, 128, false);
    ember_context *ref = new_ctx(m, 128, false);
    ember_token long_prompt[64];
    size_t n = 0;
    uint32_t n_past = 0;
    pthread_t th;
    struct aborter a;
    const float *la, *lb;
    size_t na, nb;
    const char *text =
        "Once upon a time, in a small village by the sea, there lived an old fisherman who "
        "told stories to every child that would listen, and the children listened.";

    OK(ember_tokenize(m, text, strlen(text), false, false, long_prompt, 64, &n));
    REQUIRE(n > 20);
    OK(ember_decode(c, PROMPT_IDS, 2));
    a.ctx = c;
    a.delay_ms = 30;
    REQUIRE(pthread_create(&th, NULL, abort_later, &a) == 0);
    /* Scalar or SIMD, a prefill of this many tokens takes longer than 30 ms. */
    EXPECT(ember_decode(c, long_prompt, n), EMBER_ERR_ABORTED);
    pthread_join(th, NULL);
    OK(ember_context_n_past(c, &n_past));
    CHECK(n_past == 2);

    /* Usable afterwards, and exactly as if the aborted batch never happened. */
    OK(ember_decode(c, PROMPT_IDS + 2, 3));
    OK(ember_decode(ref, PROMPT_IDS, 5));
    OK(ember_context_logits(c, &la, &na));
    OK(ember_context_logits(ref, &lb, &nb));
    CHECK(argmax(la, na) == argmax(lb, nb));
    ember_context_free(c);
    ember_context_free(ref);
}

/* A three-turn chat: each turn processes only what follows the cached conversation. */
static void chat(const ember_model *m) {
    ember_chat *ch = NULL;
    ember_context_params cp;
    ember_chat_params chp;
    ember_sampler *s = greedy_sampler(m);
    ember_generate_params gp;
    ember_chat_result res;
    ember_chat_info info;
    struct collect col;
    const char *questions[3] = {"What is the capital of France?", "And of Italy?",
                                "Thanks! Ünïcödé {{ braces }} ok?"};
    char buf[8192];
    size_t needed = 0;
    uint32_t prev_past = 0;
    int turn;

    OK(ember_context_params_default(&cp, sizeof cp));
    cp.n_ctx = 1024;
    OK(ember_chat_params_default(&chp, sizeof chp));
    OK(ember_chat_new(m, &cp, &chp, &ch));
    REQUIRE(ch != NULL);
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    OK(ember_chat_get_info(ch, &info));
    CHECK(info.template_origin == EMBER_TEMPLATE_MODEL && info.builtin_template == NULL);
    CHECK(info.n_messages == 0 && info.n_ctx == 1024);
    OK(ember_chat_add_message(ch, "system", "Answer in one short sentence.", 29));
    OK(ember_generate_params_default(&gp, sizeof gp));
    gp.max_tokens = 32;
    for (turn = 0; turn < 3; turn++) {
        OK(ember_chat_add_message(ch, "user", questions[turn], strlen(questions[turn])));
        memset(&col, 0, sizeof col);
        memset(&res, 0, sizeof res);
        res.struct_size = sizeof res;
        OK(ember_chat_generate(ch, s, &gp, collect_piece, &col, &res));
        CHECK(!col.bad_utf8 && col.len > 0);
        CHECK(res.prompt_processed == res.prompt_tokens - res.prompt_reused);
        /* Everything cached after the last turn is reused; only the new text is processed. */
        CHECK(res.prompt_reused == prev_past);
        if (turn > 0) CHECK(res.prompt_processed > 0 && res.prompt_processed < 40);
        CHECK(res.stop_reason == EMBER_STOP_END_OF_GENERATION ||
              res.stop_reason == EMBER_STOP_MAX_TOKENS);
        OK(ember_chat_get_info(ch, &info));
        CHECK(info.n_messages == (uint32_t)(2 + 2 * turn + 1));
        prev_past = info.n_past;
        printf("chat turn %d: %u prompt tokens, %u reused, %u processed: %s\n", turn,
               res.prompt_tokens, res.prompt_reused, res.prompt_processed, col.text);
        /* The reply is the last message. */
        OK(ember_chat_message_json(ch, info.n_messages - 1, buf, sizeof buf, &needed));
        CHECK(strstr(buf, "\"role\":\"assistant\"") != NULL);
    }
    /* The rendered prompt is the SmolLM2 template's. */
    OK(ember_chat_render(ch, true, buf, sizeof buf, &needed));
    CHECK(strncmp(buf, "<|im_start|>system\nAnswer in one short sentence.<|im_end|>\n", 58) == 0);
    CHECK(needed == strlen(buf) + 1);
    CHECK(strcmp(buf + strlen(buf) - 22, "<|im_start|>assistant\n") == 0);
    /* Reset keeps the system prompt. */
    OK(ember_chat_reset(ch));
    OK(ember_chat_get_info(ch, &info));
    CHECK(info.n_messages == 1);
    /* A message as JSON (content parts). */
    {
        const char *msg = "{\"role\": \"user\", \"content\": \"Hi there\"}";
        OK(ember_chat_add_message_json(ch, msg, strlen(msg)));
        OK(ember_chat_render(ch, false, buf, sizeof buf, &needed));
        CHECK(strstr(buf, "<|im_start|>user\nHi there<|im_end|>") != NULL);
    }
    ember_chat_free(ch);

    /* A template given by the caller, with a pinned date. */
    chp.chat_template = "{{ strftime_now('%d %b %Y') }}|{% for m in messages %}{{ m.role }}:"
                        "{{ m.content }};{% endfor %}{% if add_generation_prompt %}A:{% endif %}";
    chp.pin_now = true;
    chp.now_unix = 1741356309; /* 2025-03-07 14:05:09 UTC */
    OK(ember_chat_new(m, &cp, &chp, &ch));
    OK(ember_chat_get_info(ch, &info));
    CHECK(info.template_origin == EMBER_TEMPLATE_GIVEN);
    OK(ember_chat_add_message(ch, "user", "x", 1));
    OK(ember_chat_render(ch, true, buf, sizeof buf, &needed));
    CHECK(strcmp(buf, "07 Mar 2025|user:x;A:") == 0);
    ember_chat_free(ch);
    ember_sampler_free(s);
}

int main(int argc, char **argv) {
    ember_model *m = NULL;
    ember_model_params p;
    struct progress_log log;
    char greedy[512];
    int i;

    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.gguf SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    g_model_path = argv[1];
    snprintf(g_tmp, sizeof g_tmp, "%s", argv[2]);

    memset(&log, 0, sizeof log);
    OK(ember_model_params_default(&p, sizeof p));
    p.progress = log_progress;
    p.progress_user_data = &log;
    OK(ember_model_load(g_model_path, &p, &m));
    REQUIRE(m != NULL);
    CHECK(log.n >= 2 && log.values[0] == 0.0f && log.values[log.n - 1] == 1.0f);
    for (i = 1; i < log.n; i++) CHECK(log.values[i] >= log.values[i - 1]);

    load_by_fd_inside_a_bundle(m);
    metadata(m);
    tokens(m);
    generation(m, greedy, sizeof greedy);
    full_context(m);
    batch_logits(m);
    samplers(m);
    states(m);
    abort_from_another_thread(m);
    chat(m);
    ember_model_free(m);
    return report("api");
}
