// The smallest complete ember program in C++ (include/ember.hpp: RAII handles, exceptions,
// std::string, a lambda for the streamed text): load a model, stream 32 greedy tokens.
//
//   c++ -std=c++11 minimal.cpp $(pkg-config --cflags --libs ember) -o minimal
//   ./minimal SmolLM2-135M-Instruct.Q4_1.gguf "The capital of France is"
#include <iostream>
#include <string>

#include <ember.hpp>

int main(int argc, char **argv) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " MODEL.gguf [PROMPT]\n";
        return 2;
    }
    std::string prompt = argc > 2 ? argv[2] : "The capital of France is";
    try {
        ember::Model model(argv[1]);
        ember::Context ctx(model);
        ember::SamplerParams sp;
        sp.temperature = 0.0f; // greedy
        ember::Sampler sampler(model, sp);
        ember::GenerateParams gp;
        gp.max_tokens = 32;
        ctx.generate(sampler, prompt, gp, [](const std::string &piece) {
            std::cout << piece;
            return true; // false stops the generation
        });
        std::cout << "\n";
        return 0;
    } catch (const ember::Error &e) {
        std::cerr << "ember: " << ember_status_name(e.status()) << ": " << e.what() << "\n";
        return 1;
    }
}
