import dev.ember.GenerateParams
import dev.ember.Model
import dev.ember.SamplerParams
import kotlinx.coroutines.runBlocking

// Prints a greedy continuation of a prompt: Generate <model.gguf>
fun main(args: Array<String>) = runBlocking {
    Model.load(args[0]).use { model ->
        model.newContext().use { context ->
            val params = GenerateParams(maxTokens = 32, sampler = SamplerParams(temperature = 0f))
            context.generate("The capital of France is", params).collect { print(it) }
            println()
        }
    }
}
