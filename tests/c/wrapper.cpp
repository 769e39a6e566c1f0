// ember.hpp on SmolLM2: RAII handles, exceptions carrying statuses, strings and vectors
// instead of buffers, a callback's exception crossing ember_generate() safely.
//
// Usage: wrapper MODEL.gguf
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ember.hpp"

static int g_checks = 0, g_failures = 0;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        g_checks++;                                                                          \
        if (!(cond)) {                                                                       \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            g_failures++;                                                                    \
        }                                                                                    \
    } while (0)

// The status an ember call threw with, or EMBER_OK.
template <typename F> static ember_status status_of(F f) {
    try {
        f();
    } catch (const ember::Error &e) {
        CHECK(std::string(e.what()).size() > 0);
        return e.status();
    }
    return EMBER_OK;
}

struct Boom : std::runtime_error {
    Boom() : std::runtime_error("boom") {}
};

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    CHECK(status_of([] { ember::Model m("/nonexistent.gguf"); }) == EMBER_ERR_IO);

    ember::Model model(argv[1]);
    CHECK(model.architecture() == "llama");
    CHECK(model.meta("general.architecture") == "llama");
    CHECK(model.chat_template().find("<|im_start|>") != std::string::npos);
    CHECK(status_of([&] { model.meta("no.such.key"); }) == EMBER_ERR_NOT_FOUND);
    CHECK(model.info().n_vocab == 49152);

    const std::string prompt = "The capital of France is";
    std::vector<ember_token> ids = model.tokenize(prompt);
    const ember_token want[] = {504, 3575, 282, 4649, 314};
    CHECK(ids == std::vector<ember_token>(want, want + 5));
    CHECK(model.detokenize(ids) == prompt);
    CHECK(model.token_to_piece(504) == "The");
    CHECK(model.special(EMBER_SPECIAL_EOS) == 2 && model.is_eog(2));
    CHECK(status_of([&] { model.token_to_piece(49152); }) == EMBER_ERR_INVALID_TOKEN);
    CHECK(model.tokenize("").empty());
    // A long text needs more than the first guess of the buffer size.
    std::string long_text(3000, 'x');
    CHECK(model.detokenize(model.tokenize(long_text)) == long_text);

    ember::ContextParams cp;
    cp.n_ctx = 64;
    cp.n_threads = 2;
    ember::Context ctx(model, cp);
    ember::SamplerParams sp;
    sp.temperature = 0.0f;
    ember::Sampler sampler(model, sp);

    // Moving handles keeps them working and leaves nothing to double-free.
    ember::Context moved(std::move(ctx));
    CHECK(moved.get() != nullptr && ctx.get() == nullptr);
    CHECK(status_of([&] { ctx.reset(); }) == EMBER_ERR_NULL_ARGUMENT);

    moved.decode(ids);
    CHECK(moved.n_past() == 5);
    std::vector<std::uint8_t> state = moved.save_state();
    CHECK(state.size() > 1000);
    ember_token first = sampler.sample(moved);

    ember::GenerateParams gp;
    gp.max_tokens = 3;
    std::string text;
    ember::GenerateResult r = moved.generate(sampler, "", gp, [&](const std::string &piece) {
        text += piece;
        return true;
    });
    CHECK(r.generated_tokens == 3 && r.stop_reason == EMBER_STOP_MAX_TOKENS);
    CHECK(text.find(model.token_to_piece(first)) == 0);

    // An exception thrown by the callback stops the generation and comes back out.
    moved.load_state(state);
    bool caught = false;
    try {
        moved.generate(sampler, "", gp, [](const std::string &) -> bool { throw Boom(); });
    } catch (const Boom &) {
        caught = true;
    }
    CHECK(caught);
    CHECK(moved.n_past() == 5); // one token sampled, the throw stopped it before decoding

    CHECK(status_of([&] {
              std::vector<std::uint8_t> bad(state.begin(), state.end() - 1);
              moved.load_state(bad);
          }) == EMBER_ERR_INVALID_STATE);

    // A chat session: two turns, the second reusing the first's cache.
    {
        ember::ContextParams cp;
        cp.n_ctx = 512;
        ember::Chat chat(model, cp);
        CHECK(chat.info().template_origin == EMBER_TEMPLATE_MODEL);
        chat.add_message("system", "Answer briefly.");
        chat.add_message("user", "What is the capital of France?");
        ember::GenerateParams cgp;
        cgp.max_tokens = 16;
        std::string reply;
        ember::ChatResult c1 = chat.generate(sampler, cgp, [&](const std::string &piece) {
            reply += piece;
            return true;
        });
        CHECK(!reply.empty() && c1.prompt_reused == 0);
        CHECK(chat.message_json(2).find("\"role\":\"assistant\"") != std::string::npos);
        chat.add_message("user", "And of Italy?");
        ember::ChatResult c2 = chat.generate(sampler, cgp, [](const std::string &) { return true; });
        CHECK(c2.prompt_reused >= c1.prompt_tokens && c2.prompt_processed < c2.prompt_tokens);
        CHECK(chat.render().find("<|im_start|>user\nAnd of Italy?<|im_end|>") != std::string::npos);
        ember::ChatParams bad;
        bad.chat_template_source = "{% if %}";
        CHECK(status_of([&] { ember::Chat c(model, cp, bad); }) == EMBER_ERR_TEMPLATE);
    }

    std::printf("wrapper: %d passed, %d failed\n", g_checks - g_failures, g_failures);
    return g_failures == 0 ? 0 : 1;
}
