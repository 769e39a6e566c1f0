import dev.ember.ChatParams
import dev.ember.GenerateParams
import dev.ember.Model
import dev.ember.SamplerParams
import kotlinx.coroutines.runBlocking

// A two-turn chat with greedy replies, in the model's own chat template: Chat <model.gguf>
fun main(args: Array<String>) = runBlocking {
    Model.load(args[0]).use { model ->
        model.newChat(ChatParams(systemPrompt = "Answer in one short sentence.")).use { chat ->
            val params = GenerateParams(maxTokens = 64, sampler = SamplerParams(temperature = 0f))
            for (question in listOf("What is the capital of France?", "And of Italy?")) {
                chat.addMessage("user", question)
                chat.reply(params).collect { print(it) }
                val turn = chat.lastResult!!
                println("\n[${turn.promptProcessed} new prompt tokens, ${turn.promptReused} reused]")
            }
        }
    }
}
