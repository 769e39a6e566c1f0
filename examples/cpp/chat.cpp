// A terminal chat through ember.hpp: each line on stdin is a user turn; the reply streams
// to stdout. The model's own chat template (Jinja, from the GGUF file) makes the prompt,
// and the session keeps the conversation's KV cache, so each turn only processes the new
// text; old turns are dropped when the context fills (the system prompt stays).
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
        ember::ContextParams cp;
        cp.n_ctx = 2048;
        ember::Chat chat(model, cp);
        ember::SamplerParams sp;
        sp.temperature = 0.0f; // greedy: the same answer every run
        ember::Sampler sampler(model, sp);
        ember::GenerateParams gp;
        gp.max_tokens = argc > 2 ? static_cast<uint32_t>(std::atoi(argv[2])) : 256;

        chat.add_message("system", "You are a helpful assistant.");
        std::string line;
        std::cerr << "> " << std::flush;
        while (std::getline(std::cin, line)) {
            if (line.empty()) continue;
            chat.add_message("user", line);
            ember::ChatResult r = chat.generate(sampler, gp, [](const std::string &piece) {
                std::cout << piece << std::flush;
                return true;
            });
            std::cout << "\n";
            std::cerr << "[" << r.generated_tokens << " tokens, "
                      << static_cast<int>(r.generate_ms) << " ms; " << r.prompt_processed
                      << " new prompt tokens]\n> " << std::flush;
        }
        return 0;
    } catch (const ember::Error &e) {
        std::cerr << "ember: " << ember_status_name(e.status()) << ": " << e.what() << "\n";
        return 1;
    }
}
