// ember.hpp: a small header-only C++11 wrapper over the C API in ember.h.
//
// RAII handles (move-only), exceptions instead of status codes, std::string and
// std::vector instead of buffer negotiation, std::function callbacks. Everything maps
// one-to-one onto ember.h, so its comments (ownership, threads, errors) apply here too:
// a Model is shareable across threads; a Context or Sampler is used by one thread at a
// time. An exception thrown by a callback stops the call and is rethrown from it.
//
// Hand-written (unlike ember.h, which is generated); compiles as C++11 and later.
#ifndef EMBER_HPP
#define EMBER_HPP

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ember.h"

namespace ember {

/// A failed ember call: the status and ember_last_error()'s message.
class Error : public std::runtime_error {
  public:
    Error(ember_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    ember_status status() const noexcept { return status_; }

  private:
    ember_status status_;
};

namespace detail {

inline void check(ember_status st) {
    if (st != EMBER_OK) {
        std::string msg = ember_last_error();
        if (msg.empty()) msg = ember_status_name(st);
        throw Error(st, msg);
    }
}

// Runs a buffer-filling C function twice at most: once with a guess, once with the size
// it asked for.
template <typename T, typename F> std::vector<T> fill(F f, std::size_t guess) {
    std::vector<T> buf(guess > 0 ? guess : 1);
    std::size_t needed = 0;
    ember_status st = f(buf.data(), buf.size(), &needed);
    if (st == EMBER_ERR_BUFFER_TOO_SMALL) {
        buf.resize(needed);
        st = f(buf.data(), buf.size(), &needed);
    }
    check(st);
    buf.resize(needed);
    return buf;
}

template <typename F> std::string fill_text(F f, std::size_t guess = 64) {
    std::vector<char> buf = fill<char>(f, guess);
    // `needed` counts the terminating NUL.
    return std::string(buf.data(), buf.empty() ? 0 : buf.size() - 1);
}

} // namespace detail

/// ember_model_params with the library's defaults.
struct ModelParams : ember_model_params {
    ModelParams() { detail::check(ember_model_params_default(this, sizeof(ember_model_params))); }
};

/// ember_context_params with the library's defaults.
struct ContextParams : ember_context_params {
    ContextParams() {
        detail::check(ember_context_params_default(this, sizeof(ember_context_params)));
    }
};

/// ember_sampler_params with the library's defaults; logit biases kept alongside.
struct SamplerParams : ember_sampler_params {
    SamplerParams() {
        detail::check(ember_sampler_params_default(this, sizeof(ember_sampler_params)));
    }
    std::vector<ember_logit_bias> biases;
};

/// ember_generate_params with the library's defaults; stop strings kept alongside.
struct GenerateParams : ember_generate_params {
    GenerateParams() {
        detail::check(ember_generate_params_default(this, sizeof(ember_generate_params)));
    }
    std::vector<std::string> stop_strings;
};

/// What a generation did (ember_generate_result).
struct GenerateResult : ember_generate_result {
    GenerateResult() : ember_generate_result() { struct_size = sizeof(ember_generate_result); }
};

/// Return false to stop a generation.
typedef std::function<bool(const std::string &piece)> PieceFn;

namespace detail {

// Carries the std::function through the C callback; an exception is caught here (it must
// not unwind through ember) and rethrown once the C call has returned.
struct Trampoline {
    explicit Trampoline(const PieceFn &f) : fn(f) {}
    const PieceFn &fn;
    std::exception_ptr error;
    static bool call(const char *piece, std::size_t len, void *user) {
        Trampoline *t = static_cast<Trampoline *>(user);
        try {
            return t->fn(std::string(piece, len));
        } catch (...) {
            t->error = std::current_exception();
            return false;
        }
    }
};

// The C params of `params`, pointing into `stops` (which must outlive the call).
inline ember_generate_params c_params(const GenerateParams &params,
                                      std::vector<const char *> &stops) {
    for (std::size_t i = 0; i < params.stop_strings.size(); i++)
        stops.push_back(params.stop_strings[i].c_str());
    ember_generate_params p = params;
    if (!stops.empty()) {
        p.stop = stops.data();
        p.n_stop = stops.size();
    }
    return p;
}

} // namespace detail

/// ember_chat_params with the library's defaults; the strings are kept alongside (empty =
/// not set: the model's template, no tools, no variables).
struct ChatParams : ember_chat_params {
    ChatParams() { detail::check(ember_chat_params_default(this, sizeof(ember_chat_params))); }
    std::string chat_template_source, tools, template_vars;
};

/// What one chat reply did (ember_chat_result).
struct ChatResult : ember_chat_result {
    ChatResult() : ember_chat_result() { struct_size = sizeof(ember_chat_result); }
};

/// A loaded model (ember_model). Thread-safe; move-only.
class Model {
  public:
    explicit Model(const std::string &path, const ModelParams &params = ModelParams()) {
        detail::check(ember_model_load(path.c_str(), &params, &m_));
    }

    /// Loads `len` bytes at `offset` of an open file (0 = to the end); `fd` stays yours.
    Model(int fd, std::uint64_t offset, std::uint64_t len,
          const ModelParams &params = ModelParams()) {
        detail::check(ember_model_load_fd(fd, offset, len, &params, &m_));
    }

    ~Model() { ember_model_free(m_); }
    Model(Model &&o) noexcept : m_(o.m_) { o.m_ = nullptr; }
    Model &operator=(Model &&o) noexcept {
        std::swap(m_, o.m_);
        return *this;
    }
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;

    const ember_model *get() const noexcept { return m_; }

    ember_model_info info() const {
        ember_model_info i = ember_model_info();
        i.struct_size = sizeof i;
        detail::check(ember_model_get_info(m_, &i));
        return i;
    }

    std::string architecture() const {
        const ember_model *m = m_;
        return detail::fill_text([m](char *b, std::size_t c, std::size_t *n) {
            return ember_model_architecture(m, b, c, n);
        });
    }

    /// The chat template; throws Error with EMBER_ERR_NOT_FOUND when there is none.
    std::string chat_template() const {
        const ember_model *m = m_;
        return detail::fill_text(
            [m](char *b, std::size_t c, std::size_t *n) {
                return ember_model_chat_template(m, b, c, n);
            },
            4096);
    }

    /// A metadata value as text; throws Error with EMBER_ERR_NOT_FOUND for a missing key.
    std::string meta(const std::string &key) const {
        const ember_model *m = m_;
        const char *k = key.c_str();
        return detail::fill_text([m, k](char *b, std::size_t c, std::size_t *n) {
            return ember_model_meta(m, k, b, c, n);
        });
    }

    std::vector<ember_token> tokenize(const std::string &text, bool add_special = true,
                                      bool parse_special = false) const {
        const ember_model *m = m_;
        return detail::fill<ember_token>(
            [&](ember_token *b, std::size_t c, std::size_t *n) {
                return ember_tokenize(m, text.data(), text.size(), add_special, parse_special,
                                      b, c, n);
            },
            text.size() + 2);
    }

    std::string detokenize(const std::vector<ember_token> &tokens, bool remove_special = false,
                           bool unparse_special = false) const {
        const ember_model *m = m_;
        return detail::fill_text(
            [&](char *b, std::size_t c, std::size_t *n) {
                return ember_detokenize(m, tokens.data(), tokens.size(), remove_special,
                                        unparse_special, b, c, n);
            },
            tokens.size() * 8 + 1);
    }

    std::string token_to_piece(ember_token t, bool special = false) const {
        const ember_model *m = m_;
        return detail::fill_text([m, t, special](char *b, std::size_t c, std::size_t *n) {
            return ember_token_to_piece(m, t, special, b, c, n);
        });
    }

    /// A special token id (kind: EMBER_SPECIAL_*); throws EMBER_ERR_NOT_FOUND if absent.
    ember_token special(std::uint32_t kind) const {
        ember_token t = 0;
        detail::check(ember_token_special(m_, kind, &t));
        return t;
    }

    bool is_eog(ember_token t) const {
        bool eog = false;
        detail::check(ember_token_is_eog(m_, t, &eog));
        return eog;
    }

  private:
    ember_model *m_ = nullptr;
};

class Context;

/// A sampling chain (ember_sampler). One thread at a time; move-only.
class Sampler {
  public:
    explicit Sampler(const Model &model, const SamplerParams &params = SamplerParams()) {
        ember_sampler_params p = params;
        p.logit_bias = params.biases.empty() ? params.logit_bias : params.biases.data();
        p.n_logit_bias = params.biases.empty() ? params.n_logit_bias : params.biases.size();
        detail::check(ember_sampler_new(model.get(), &p, &s_));
    }
    ~Sampler() { ember_sampler_free(s_); }
    Sampler(Sampler &&o) noexcept : s_(o.s_) { o.s_ = nullptr; }
    Sampler &operator=(Sampler &&o) noexcept {
        std::swap(s_, o.s_);
        return *this;
    }
    Sampler(const Sampler &) = delete;
    Sampler &operator=(const Sampler &) = delete;

    ember_sampler *get() const noexcept { return s_; }

    inline ember_token sample(const Context &ctx);

    ember_token sample(const float *logits, std::size_t n) {
        ember_token t = 0;
        detail::check(ember_sampler_sample_logits(s_, logits, n, &t));
        return t;
    }

    void accept(ember_token t) { detail::check(ember_sampler_accept(s_, t)); }
    void reset() { detail::check(ember_sampler_reset(s_)); }

  private:
    ember_sampler *s_ = nullptr;
};

/// One conversation (ember_context). One thread at a time (abort() excepted); move-only.
class Context {
  public:
    typedef ember::PieceFn PieceFn;

    explicit Context(const Model &model, const ContextParams &params = ContextParams()) {
        detail::check(ember_context_new(model.get(), &params, &c_));
    }
    ~Context() { ember_context_free(c_); }
    Context(Context &&o) noexcept : c_(o.c_) { o.c_ = nullptr; }
    Context &operator=(Context &&o) noexcept {
        std::swap(c_, o.c_);
        return *this;
    }
    Context(const Context &) = delete;
    Context &operator=(const Context &) = delete;

    ember_context *get() const noexcept { return c_; }

    ember_context_info info() const {
        ember_context_info i = ember_context_info();
        i.struct_size = sizeof i;
        detail::check(ember_context_get_info(c_, &i));
        return i;
    }

    std::uint32_t n_past() const {
        std::uint32_t n = 0;
        detail::check(ember_context_n_past(c_, &n));
        return n;
    }

    void reset() { detail::check(ember_context_reset(c_)); }
    void truncate(std::uint32_t n_past) { detail::check(ember_context_truncate(c_, n_past)); }

    void decode(const std::vector<ember_token> &tokens) {
        detail::check(ember_decode(c_, tokens.data(), tokens.size()));
    }
    void decode_all(const std::vector<ember_token> &tokens) {
        detail::check(ember_decode_all(c_, tokens.data(), tokens.size()));
    }

    /// The last logits: n_vocab floats owned by the context, valid until it changes.
    std::pair<const float *, std::size_t> logits() const {
        const float *l = nullptr;
        std::size_t n = 0;
        detail::check(ember_context_logits(c_, &l, &n));
        return std::make_pair(l, n);
    }
    std::pair<const float *, std::size_t> logits_ith(std::size_t i) const {
        const float *l = nullptr;
        std::size_t n = 0;
        detail::check(ember_context_logits_ith(c_, i, &l, &n));
        return std::make_pair(l, n);
    }

    /// Thread-safe: stops a running decode or generation (it then throws
    /// Error(EMBER_ERR_ABORTED)).
    void abort() const noexcept { ember_context_abort(c_); }

    /// Generates a continuation of `prompt`, streaming whole UTF-8 pieces to `on_piece`.
    GenerateResult generate(Sampler &sampler, const std::string &prompt,
                            const GenerateParams &params, const PieceFn &on_piece) {
        std::vector<const char *> stops;
        ember_generate_params p = detail::c_params(params, stops);
        detail::Trampoline t(on_piece);
        GenerateResult r;
        ember_status st = ember_generate(c_, sampler.get(), prompt.data(), prompt.size(), &p,
                                         &detail::Trampoline::call, &t, &r);
        if (t.error) std::rethrow_exception(t.error);
        detail::check(st);
        return r;
    }

    GenerateResult generate(Sampler &sampler, const std::string &prompt,
                            const PieceFn &on_piece) {
        return generate(sampler, prompt, GenerateParams(), on_piece);
    }

    std::vector<std::uint8_t> save_state() const {
        ember_context *c = c_;
        std::size_t size = 0;
        detail::check(ember_state_size(c, &size));
        return detail::fill<std::uint8_t>(
            [c](std::uint8_t *b, std::size_t cap, std::size_t *n) {
                return ember_state_save(c, b, cap, n);
            },
            size);
    }
    void load_state(const std::vector<std::uint8_t> &state) {
        detail::check(ember_state_load(c_, state.data(), state.size()));
    }
    void save_state_file(const std::string &path) const {
        detail::check(ember_state_save_file(c_, path.c_str()));
    }
    void load_state_file(const std::string &path) {
        detail::check(ember_state_load_file(c_, path.c_str()));
    }

  private:
    ember_context *c_ = nullptr;
};

/// A chat session (ember_chat): the model's chat template, the messages, and a context
/// that keeps the conversation's KV cache between replies. One thread at a time (abort()
/// excepted); move-only.
class Chat {
  public:
    explicit Chat(const Model &model, const ContextParams &ctx_params = ContextParams(),
                  const ChatParams &params = ChatParams()) {
        ember_chat_params p = params;
        if (!params.chat_template_source.empty()) p.chat_template = params.chat_template_source.c_str();
        if (!params.tools.empty()) p.tools_json = params.tools.c_str();
        if (!params.template_vars.empty()) p.template_vars_json = params.template_vars.c_str();
        detail::check(ember_chat_new(model.get(), &ctx_params, &p, &c_));
    }
    ~Chat() { ember_chat_free(c_); }
    Chat(Chat &&o) noexcept : c_(o.c_) { o.c_ = nullptr; }
    Chat &operator=(Chat &&o) noexcept {
        std::swap(c_, o.c_);
        return *this;
    }
    Chat(const Chat &) = delete;
    Chat &operator=(const Chat &) = delete;

    ember_chat *get() const noexcept { return c_; }

    void add_message(const std::string &role, const std::string &content) {
        detail::check(ember_chat_add_message(c_, role.c_str(), content.data(), content.size()));
    }
    /// A message as a JSON object (content parts, tool calls...).
    void add_message_json(const std::string &json) {
        detail::check(ember_chat_add_message_json(c_, json.data(), json.size()));
    }

    /// Generates the assistant's reply, streaming it to `on_piece`; it joins the messages.
    ChatResult generate(Sampler &sampler, const GenerateParams &params, const PieceFn &on_piece) {
        std::vector<const char *> stops;
        ember_generate_params p = detail::c_params(params, stops);
        detail::Trampoline t(on_piece);
        ChatResult r;
        ember_status st =
            ember_chat_generate(c_, sampler.get(), &p, &detail::Trampoline::call, &t, &r);
        if (t.error) std::rethrow_exception(t.error);
        detail::check(st);
        return r;
    }

    /// Forgets every message but the system messages.
    void reset() { detail::check(ember_chat_reset(c_)); }
    /// Thread-safe: stops a running reply (generate() then throws EMBER_ERR_ABORTED).
    void abort() const noexcept { ember_chat_abort(c_); }

    /// The exact prompt the template makes of the conversation.
    std::string render(bool add_generation_prompt = true) const {
        ember_chat *c = c_;
        std::vector<char> b = detail::fill<char>(
            [c, add_generation_prompt](char *buf, std::size_t cap, std::size_t *n) {
                return ember_chat_render(c, add_generation_prompt, buf, cap, n);
            },
            1024);
        return std::string(b.data());
    }

    std::string message_json(std::size_t index) const {
        ember_chat *c = c_;
        std::vector<char> b = detail::fill<char>(
            [c, index](char *buf, std::size_t cap, std::size_t *n) {
                return ember_chat_message_json(c, index, buf, cap, n);
            },
            256);
        return std::string(b.data());
    }

    ember_chat_info info() const {
        ember_chat_info i = ember_chat_info();
        i.struct_size = sizeof i;
        detail::check(ember_chat_get_info(c_, &i));
        return i;
    }

  private:
    ember_chat *c_ = nullptr;
};

inline ember_token Sampler::sample(const Context &ctx) {
    ember_token t = 0;
    detail::check(ember_sampler_sample(s_, ctx.get(), &t));
    return t;
}

} // namespace ember

#endif // EMBER_HPP
