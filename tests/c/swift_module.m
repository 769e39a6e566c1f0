/*
 * The Swift package's module map (bindings/swift/Sources/CEmber/include/module.modulemap)
 * checked with clang, since no Swift compiler runs here: this file imports the CEmber
 * module the way Objective-C does (@import needs -fmodules; Swift's `import CEmber` reads
 * the same module map), then uses the C API through it on a real model, including every
 * ember_chat_* call of Sources/Ember/ChatSession.swift, made as it makes them, in a
 * two-turn chat.
 *
 *   swift_module MODEL.gguf
 */
@import CEmber;

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define FAIL(what)                                                                         \
    do {                                                                                   \
        fprintf(stderr, "swift_module:%d: %s\n", __LINE__, what);                          \
        return false;                                                                      \
    } while (0)
#define TRY(call)                                                                          \
    do {                                                                                   \
        ember_status st_ = (call);                                                         \
        if (st_ != EMBER_OK) {                                                             \
            fprintf(stderr, "swift_module:%d: %s: %s: %s\n", __LINE__, #call,              \
                    ember_status_name(st_), ember_last_error());                           \
            return false;                                                                  \
        }                                                                                  \
    } while (0)

/* The Swift layer's piece sink: its user_data comes back with each piece. */
struct sink {
    char text[4096];
    size_t len;
    int pieces;
};

static bool on_piece(const char *piece, size_t len, void *user_data) {
    struct sink *s = user_data;
    if (s->len + len < sizeof s->text) {
        memcpy(s->text + s->len, piece, len);
        s->len += len;
        s->text[s->len] = '\0';
    }
    s->pieces++;
    return true;
}

/* One reply as Sources/Ember/ChatSession.swift makes it: generate params from their
 * defaults with a stop string, the result's struct_size set. */
static bool reply(ember_chat *chat, ember_sampler *sampler, struct sink *out,
                  ember_chat_result *res) {
    ember_generate_params gp;
    const char *stop[] = {"\n\n\n"};
    TRY(ember_generate_params_default(&gp, sizeof gp));
    gp.max_tokens = 24;
    gp.stop = stop;
    gp.n_stop = 1;
    memset(out, 0, sizeof *out);
    memset(res, 0, sizeof *res);
    res->struct_size = sizeof *res;
    TRY(ember_chat_generate(chat, sampler, &gp, on_piece, out, res));
    return true;
}

/* What ChatSession.swift calls, in its order: new (with a context and chat params), the
 * system prompt, two turns (the second must reuse the first's cache), render, a message
 * as JSON, info, abort, reset, free; then a template that does not compile. */
static bool chat_through_module(ember_model *model) {
    ember_context_params cp;
    ember_chat_params chp;
    ember_sampler_params sp;
    ember_chat *chat = NULL;
    ember_sampler *sampler = NULL;
    ember_chat_result first, second;
    ember_chat_info info;
    struct sink text;
    char buf[8192];
    size_t needed = 0;
    const char *q1 = "What is the capital of France?", *q2 = "And of Italy?";
    const char *json = "{\"role\": \"user\", \"content\": \"Thanks!\"}";
    bool ok = false;

    TRY(ember_context_params_default(&cp, sizeof cp));
    cp.n_ctx = 512;
    TRY(ember_chat_params_default(&chp, sizeof chp));
    chp.pin_now = true;
    chp.now_unix = 0;
    TRY(ember_sampler_params_default(&sp, sizeof sp));
    sp.temperature = 0;
    TRY(ember_sampler_new(model, &sp, &sampler));
    TRY(ember_chat_new(model, &cp, &chp, &chat));
    do {
        if (ember_chat_add_message(chat, "system", "Answer briefly.", 15) != EMBER_OK) break;
        if (ember_chat_add_message(chat, "user", q1, strlen(q1)) != EMBER_OK) break;
        if (!reply(chat, sampler, &text, &first)) break;
        if (text.pieces == 0 || first.prompt_reused != 0 ||
            first.prompt_processed != first.prompt_tokens) {
            fprintf(stderr, "swift_module: turn 1: %d pieces, %u reused\n", text.pieces,
                    first.prompt_reused);
            break;
        }
        printf("swift_module: chat turn 1: %u prompt tokens processed: %s\n",
               first.prompt_processed, text.text);
        if (ember_chat_add_message(chat, "user", q2, strlen(q2)) != EMBER_OK) break;
        if (!reply(chat, sampler, &text, &second)) break;
        if (second.prompt_reused < first.prompt_tokens ||
            second.prompt_processed != second.prompt_tokens - second.prompt_reused) {
            fprintf(stderr, "swift_module: turn 2 reused %u of %u (turn 1 had %u)\n",
                    second.prompt_reused, second.prompt_tokens, first.prompt_tokens);
            break;
        }
        printf("swift_module: chat turn 2: %u of %u prompt tokens reused, %u processed\n",
               second.prompt_reused, second.prompt_tokens, second.prompt_processed);
        if (ember_chat_add_message_json(chat, json, strlen(json)) != EMBER_OK) break;
        /* fetchText: a size query, then the call with a buffer of that size. */
        if (ember_chat_render(chat, true, NULL, 0, &needed) != EMBER_OK ||
            needed > sizeof buf || ember_chat_render(chat, true, buf, needed, &needed) != EMBER_OK ||
            !strstr(buf, q2) || !strstr(buf, "Thanks!")) {
            fprintf(stderr, "swift_module: render: %s\n", ember_last_error());
            break;
        }
        if (ember_chat_message_json(chat, 2, buf, sizeof buf, &needed) != EMBER_OK ||
            !strstr(buf, "assistant")) {
            fprintf(stderr, "swift_module: message 2: %s\n", ember_last_error());
            break;
        }
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        if (ember_chat_get_info(chat, &info) != EMBER_OK || info.n_messages != 6 ||
            info.template_origin != EMBER_TEMPLATE_MODEL || info.builtin_template != NULL ||
            info.n_ctx != 512 || info.n_past == 0) {
            fprintf(stderr, "swift_module: info: %u messages, origin %u\n", info.n_messages,
                    info.template_origin);
            break;
        }
        /* An abort while nothing runs is dropped when the next reply starts. */
        if (ember_chat_abort(chat) != EMBER_OK || ember_chat_reset(chat) != EMBER_OK) break;
        if (ember_chat_get_info(chat, &info) != EMBER_OK || info.n_messages != 1) break;
        ok = true;
    } while (0);
    if (!ok) fprintf(stderr, "swift_module: chat failed: %s\n", ember_last_error());
    ember_chat_free(chat);
    ember_sampler_free(sampler);
    if (!ok) return false;

    chp.chat_template = "{% if messages %}never closed";
    chat = NULL;
    if (ember_chat_new(model, &cp, &chp, &chat) != EMBER_ERR_TEMPLATE || chat != NULL)
        FAIL("a template that does not compile is not EMBER_ERR_TEMPLATE");
    printf("swift_module: bad template: %s\n", ember_last_error());
    return true;
}

int main(int argc, char **argv) {
    ember_model *model = NULL;
    ember_model_info info;
    ember_token tokens[16];
    size_t n = 0;
    const char *text = "The capital of France is";
    ember_status st;

    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    if (ember_abi_version() != EMBER_ABI_VERSION) {
        fprintf(stderr, "ABI %u, header %d\n", ember_abi_version(), EMBER_ABI_VERSION);
        return 1;
    }
    st = ember_model_load(argv[1], NULL, &model);
    if (st != EMBER_OK) {
        fprintf(stderr, "%s: %s\n", ember_status_name(st), ember_last_error());
        return 1;
    }
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    st = ember_model_get_info(model, &info);
    if (st == EMBER_OK) st = ember_tokenize(model, text, strlen(text), true, false, tokens, 16, &n);
    if (st != EMBER_OK) {
        fprintf(stderr, "%s: %s\n", ember_status_name(st), ember_last_error());
        ember_model_free(model);
        return 1;
    }
    printf("swift_module: ember %s through @import CEmber: n_vocab %u, \"%s\" is %zu tokens\n",
           ember_version(), info.n_vocab, text, n);
    if (!chat_through_module(model)) {
        ember_model_free(model);
        return 1;
    }
    ember_model_free(model);
    return 0;
}
