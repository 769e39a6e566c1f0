// A terminal chat with a ChatML model (SmolLM2, Qwen...) through ember.hpp: each line on
// stdin is a user turn; the reply streams to stdout. The conversation stays in the context,
// so each turn only feeds the new text.
//
//   chat MODEL.gguf [MAX_TOKENS_PER_REPLY]
//
// Build against an installed ember with CMake (see examples/CMakeLists.txt) or:
//   c++ -std=c++11 chat.cpp $(pkg-config --cflags --libs ember) -o chat
#include <cstdlib>
#include <iostream>
#include <string>

#include <ember.hpp>

int main(int argc, char **argv) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " MODEL.gguf [MAX_TOKENS_PER_REPLY]\n";
        return 2;
    }
    try {
        ember::Model model(argv[1]);
        std::string tmpl;
        try {
            tmpl = model.chat_template();
        } catch (const ember::Error &e) {
            if (e.status() != EMBER_ERR_NOT_FOUND) throw;
        }
        // This example speaks ChatML only; ember does not render Jinja templates yet.
        if (tmpl.find("<|im_start|>") == std::string::npos) {
            std::cerr << "this example needs a ChatML model (<|im_start|> in its template)\n";
            return 1;
        }

        ember::ContextParams cp;
        cp.n_ctx = 2048;
        ember::Context ctx(model, cp);
        ember::SamplerParams sp;
        sp.temperature = 0.0f; // greedy: the same answer every run
        ember::Sampler sampler(model, sp);
        ember::GenerateParams gp;
        gp.max_tokens = argc > 2 ? static_cast<uint32_t>(std::atoi(argv[2])) : 256;
        gp.context_shift = true;

        std::string turn =
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
        std::string line;
        std::cerr << "> " << std::flush;
        while (std::getline(std::cin, line)) {
            if (line.empty()) continue;
            turn += "<|im_start|>user\n" + line + "<|im_end|>\n<|im_start|>assistant\n";
            ember::GenerateResult r =
                ctx.generate(sampler, turn, gp, [](const std::string &piece) {
                    std::cout << piece << std::flush;
                    return true;
                });
            std::cout << "\n";
            std::cerr << "[" << r.generated_tokens << " tokens, "
                      << static_cast<int>(r.generate_ms) << " ms]\n> " << std::flush;
            // The end-of-turn token ends generation without entering the context, and a
            // reply cut by max_tokens has none: the next turn closes this one either way.
            turn = "<|im_end|>\n";
        }
        return 0;
    } catch (const ember::Error &e) {
        std::cerr << "ember: " << ember_status_name(e.status()) << ": " << e.what() << "\n";
        return 1;
    }
}
