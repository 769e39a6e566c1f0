// Streams a greedy continuation of a prompt: ember-swift-example MODEL.gguf [PROMPT]
import Ember
import Foundation

let args = CommandLine.arguments
guard args.count > 1 else {
    FileHandle.standardError.write("usage: ember-swift-example MODEL.gguf [PROMPT]\n".data(using: .utf8)!)
    exit(2)
}
let prompt = args.count > 2 ? args[2] : "The capital of France is"

let model = try Model(path: args[1])                      // memory-mapped, shareable
let context = try Context(model: model)                   // one conversation
let sampler = try Sampler(model: model, params: .greedy)  // temperature 0
print(prompt, terminator: "")
for try await piece in context.generate(prompt, sampler: sampler, params: GenerateParams(maxTokens: 32)) {
    print(piece, terminator: "")
    fflush(stdout)
}
print()
