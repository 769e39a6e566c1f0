package dev.ember

import com.sun.jna.Memory
import com.sun.jna.ptr.PointerByReference
import dev.ember.jna.EMBER_OK
import dev.ember.jna.EmberNative
import dev.ember.jna.SizeT
import dev.ember.jna.ember_chat
import dev.ember.jna.ember_chat_params
import dev.ember.jna.ember_context_params
import dev.ember.jna.ember_generate_params
import dev.ember.jna.ember_piece_fn
import dev.ember.jna.ember_sampler
import dev.ember.jna.ember_sampler_params
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.Timeout
import org.junit.jupiter.api.assertThrows
import java.io.ByteArrayOutputStream
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import kotlin.concurrent.thread

@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@Timeout(value = 300, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class ChatTest {
    private val model = Model.load(TestSupport.model)
    private val system = "You are a helpful assistant. Answer in one short sentence."
    private val questions = listOf(
        "What is the capital of France?",
        "And what is the capital of Italy?",
        "Which of the two cities is bigger?",
    )
    private val nCtx = 1024
    private val maxTokens = 64
    private val greedy = GenerateParams(maxTokens = maxTokens, sampler = SamplerParams(temperature = 0f))

    // One worker thread per context keeps the machine's cores for the parallel tests.
    private fun chat(nCtx: Int = this.nCtx, template: String? = null) =
        model.newChat(ChatParams(systemPrompt = system, template = template, context = ContextParams(nCtx = nCtx, nThreads = 1)))

    /** Tokens of a rendered prompt, as the session counts them (control tokens parsed). */
    private fun tokens(text: String, addSpecial: Boolean = true) = model.tokenize(text, addSpecial, parseSpecial = true).size

    private class Turn(val prompt: String, val reply: String, val result: ChatResult, val nPastAfter: Int)

    /** The three-turn greedy conversation through ChatSession, run once for the tests that look at it. */
    private val turns: List<Turn> by lazy {
        runBlocking {
            chat().use { chat ->
                questions.map { q ->
                    chat.addMessage("user", q)
                    val prompt = chat.render()
                    val reply = chat.reply(greedy).toList().joinToString("")
                    Turn(prompt, reply, chat.lastResult!!, chat.info.nPast)
                }
            }
        }
    }

    @AfterAll
    fun closeModel() {
        model.close()
        // Every session (the failed ones too) gave its use of the model back.
        assertTrue(model.isFreed, "a ChatSession still holds the model")
    }

    @Test
    fun threeTurnsProcessOnlyTheNewTokens() {
        var cached = "" // the text the KV cache holds after the previous turn
        var nPast = 0
        for ((i, t) in turns.withIndex()) {
            val r = t.result
            // Ended by the model's end-of-turn token, so the cache holds prompt + reply exactly.
            assertEquals(StopReason.END_OF_GENERATION, r.stopReason, "turn ${i + 1}: ${t.reply}")
            assertTrue(t.reply.isNotBlank())
            assertEquals(tokens(t.prompt), r.promptTokens, "turn ${i + 1}")
            assertEquals(r.promptTokens - r.promptReused, r.promptProcessed)
            assertEquals(0, r.droppedMessages)
            assertEquals(r.promptTokens + r.generatedTokens, t.nPastAfter, "turn ${i + 1}")
            if (i == 0) {
                assertEquals(0, r.promptReused)
            } else {
                // Everything in the cache was reused; what was processed is the text after it:
                // the end of the last reply's turn, the new user message, the assistant header.
                assertEquals(nPast, r.promptReused, "turn ${i + 1}")
                assertTrue(t.prompt.startsWith(cached), "turn ${i + 1} does not extend the last one")
                val added = t.prompt.substring(cached.length)
                assertTrue(added.contains(questions[i]) && !added.contains(questions[i - 1]), added)
                assertEquals(tokens(added, addSpecial = false), r.promptProcessed, "turn ${i + 1}: $added")
                assertTrue(r.promptProcessed < r.promptTokens / 2, "$r")
            }
            cached = t.prompt + t.reply
            nPast = t.nPastAfter
        }
    }

    @Test
    fun repliesEqualTheCApiAndTheCli() {
        // The same conversation through the C functions directly (JNA, no Kotlin layer).
        assertEquals(cApiReplies(questions), turns.map { it.reply })
        // The first turn through the Rust API (ember run --chat), an independent program.
        val cli = TestSupport.run(
            listOf(
                TestSupport.cli, "run", "-m", TestSupport.model, "--chat", "--system", system, "-p", questions[0],
                "-n", "$maxTokens", "--temp", "0",
            ),
        )
        assertEquals(cli, turns[0].reply + "\n")
    }

    /** Greedy replies to [qs] from ember_chat_* called by hand, with the session's settings. */
    private fun cApiReplies(qs: List<String>): List<String> {
        fun ok(status: Int) = assertEquals(EMBER_OK, status, EmberNative.ember_last_error()?.getString(0))
        fun text(s: String) = Memory(s.toByteArray().size + 1L).also { it.setString(0, s, "UTF-8") }
        val cp = ember_context_params()
        ok(EmberNative.ember_context_params_default(cp, SizeT(cp.size().toLong())))
        cp.n_ctx = nCtx
        cp.n_threads = 1
        val chp = ember_chat_params()
        ok(EmberNative.ember_chat_params_default(chp, SizeT(chp.size().toLong())))
        val sp = ember_sampler_params()
        ok(EmberNative.ember_sampler_params_default(sp, SizeT(sp.size().toLong())))
        sp.temperature = 0f
        val gp = ember_generate_params()
        ok(EmberNative.ember_generate_params_default(gp, SizeT(gp.size().toLong())))
        gp.max_tokens = maxTokens
        val out = PointerByReference()
        ok(EmberNative.ember_chat_new(model.handle, cp, chp, out))
        val chat = ember_chat(out.value)
        ok(EmberNative.ember_sampler_new(model.handle, sp, out))
        val sampler = ember_sampler(out.value)
        try {
            fun add(role: String, content: String) {
                val b = content.toByteArray()
                ok(EmberNative.ember_chat_add_message(chat, text(role), Memory(b.size.toLong()).also { it.write(0, b, 0, b.size) }, SizeT(b.size.toLong())))
            }
            add("system", system)
            return qs.map { q ->
                add("user", q)
                val bytes = ByteArrayOutputStream()
                val cb = ember_piece_fn { p, len, _ -> bytes.write(p!!.getByteArray(0, len.toInt())); true }
                ok(EmberNative.ember_chat_generate(chat, sampler, gp, cb, null, null))
                bytes.toString("UTF-8")
            }
        } finally {
            EmberNative.ember_sampler_free(sampler)
            EmberNative.ember_chat_free(chat)
        }
    }

    @Test
    fun cancellingTheReplyStopsItAndKeepsWhatWasStreamed() = runBlocking {
        chat().use { chat ->
            val long = GenerateParams(maxTokens = 200, sampler = SamplerParams(temperature = 0f))
            chat.addMessage("user", "Write a long story about a dragon.")
            val promptTokens = tokens(chat.render())
            // take(3): the collector stops after the third piece.
            val taken = chat.reply(long).take(3).toList()
            assertEquals(3, taken.size)
            // As for Context.generate: a token's piece is streamed before it is decoded, so 2
            // of the 3 are in the cache, and at most 2 more were decoded before the stop.
            val afterTake = chat.info.nPast - promptTokens
            assertTrue(afterTake in 2..4, "decoded $afterTake tokens after 3 pieces")
            // The text streamed so far is the reply in the conversation.
            val info = chat.info
            assertEquals(3, info.nMessages)
            assertTrue(chat.messageJson(2).contains("\"assistant\""))
            assertTrue(chat.messageJson(2).contains(jsonString(taken.joinToString(""))), chat.messageJson(2))
            // Cancelling the collecting coroutine.
            chat.addMessage("user", "Now write one about a knight.")
            val promptTokens2 = tokens(chat.render())
            val got = ArrayList<String>()
            val job = launch(Dispatchers.Default) {
                chat.reply(long).collect {
                    got += it
                    if (got.size == 3) cancel()
                }
            }
            job.join()
            assertEquals(3, got.size)
            val afterCancel = chat.info.nPast - promptTokens2
            assertTrue(afterCancel in 2..4, "decoded $afterCancel tokens after 3 pieces")
            // The session is free again: the next reply reuses the cache up to the cut reply.
            chat.addMessage("user", "Thanks.")
            val reply = chat.reply(GenerateParams(maxTokens = 4, sampler = SamplerParams(temperature = 0f))).toList()
            assertTrue(reply.isNotEmpty())
            val r = chat.lastResult!!
            assertTrue(r.promptReused >= promptTokens2, "$r")
            assertEquals(StopReason.MAX_TOKENS, r.stopReason)
        }
    }

    // The text as it appears inside a JSON string (the test texts need no escapes but quotes).
    private fun jsonString(s: String) = s.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")

    @Test
    fun aBadTemplateIsEmberErrTemplate() = runBlocking {
        // Does not compile: the constructor fails.
        val bad = assertThrows<EmberException> { chat(template = "{% if messages %}never closed") }
        assertEquals("EMBER_ERR_TEMPLATE", bad.statusName)
        assertTrue(bad.message!!.contains("line 1"), bad.message)
        // Compiles but fails when rendered: render() and the reply fail, the session stays usable.
        chat(template = "{{ raise_exception('no questions, please') }}").use { chat ->
            assertEquals(TemplateOrigin.GIVEN, chat.info.templateOrigin)
            chat.addMessage("user", questions[0])
            val render = assertThrows<EmberException> { chat.render() }
            assertEquals("EMBER_ERR_TEMPLATE", render.statusName)
            assertTrue(render.message!!.contains("no questions, please"), render.message)
            val reply = assertThrows<EmberException> { chat.reply(greedy).toList() }
            assertEquals("EMBER_ERR_TEMPLATE", reply.statusName)
            assertNull(chat.lastResult)
            assertEquals(2, chat.info.nMessages)
        }
    }

    @Test
    fun useAfterCloseThrowsIllegalStateException() = runBlocking {
        // A session keeps its model alive: this one outlives its own, closed first.
        val own = Model.load(TestSupport.model)
        val chat = own.newChat(ChatParams(context = ContextParams(nCtx = 256, nThreads = 1)))
        own.close()
        chat.addMessage("user", "Hi!")
        assertTrue(chat.replyBlocking(GenerateParams(maxTokens = 2, sampler = SamplerParams(temperature = 0f))) { true }.generatedTokens > 0)
        chat.close()
        assertTrue(chat.isClosed && chat.isFreed && own.isFreed)
        assertThrows<IllegalStateException> { chat.addMessage("user", "again") }
        assertThrows<IllegalStateException> { chat.addMessageJson("""{"role": "user", "content": "again"}""") }
        assertThrows<IllegalStateException> { chat.render() }
        assertThrows<IllegalStateException> { chat.info }
        assertThrows<IllegalStateException> { chat.messageJson(0) }
        assertThrows<IllegalStateException> { chat.reset() }
        assertThrows<IllegalStateException> { chat.abort() }
        assertThrows<IllegalStateException> { chat.replyBlocking(greedy) { true } }
        assertThrows<IllegalStateException> { chat.reply(greedy).toList() }
        chat.close() // twice: nothing
    }

    @Test
    fun closingWhileAReplyRunsFailsTheFlowAndFreesTheSession() = runBlocking {
        val chat = chat()
        chat.addMessage("user", "Write a long story about a dragon.")
        val first = CompletableDeferred<Unit>()
        val result = async(Dispatchers.Default) {
            runCatching { chat.reply(GenerateParams(maxTokens = 400, sampler = SamplerParams(temperature = 0f))).collect { first.complete(Unit) } }
        }
        first.await()
        chat.close()
        val e = result.await().exceptionOrNull()
        assertTrue(e is EmberException && e.statusName == "EMBER_ERR_ABORTED", "$e")
        assertTrue(chat.isFreed)
    }

    @Test
    fun oldTurnsAreDroppedWhenTheContextIsFullAndTheSystemPromptStays() {
        chat(nCtx = 160).use { chat ->
            assertEquals(TemplateOrigin.MODEL, chat.info.templateOrigin)
            assertNull(chat.info.builtinTemplate)
            assertEquals(160, chat.info.nCtx)
            // Three earlier exchanges of ~40 tokens each, written by hand (no generation).
            val filler = "Tell me about the weather in the mountains, the rivers, the forests and the lakes"
            for (i in 1..3) {
                chat.addMessage("user", "Question $i. $filler.")
                chat.addMessageJson("""{"role": "assistant", "content": "Answer $i. $filler."}""")
            }
            chat.addMessage("user", "What is the capital of France?")
            assertTrue(tokens(chat.render()) + 16 > 160, "the conversation must not fit")
            chat.replyBlocking(GenerateParams(maxTokens = 16, sampler = SamplerParams(temperature = 0f))) { true }
            val r = chat.lastResult!!
            // Whole exchanges go (a user message and its reply), from the oldest.
            assertTrue(r.droppedMessages > 0 && r.droppedMessages % 2 == 0, "$r")
            assertTrue(r.promptTokens + 16 <= 160, "$r")
            assertEquals(1 + 7 - r.droppedMessages + 1, chat.info.nMessages)
            assertTrue(chat.messageJson(0).contains(jsonString(system)), chat.messageJson(0))
            val rendered = chat.render(addGenerationPrompt = false)
            assertTrue(rendered.contains(system) && !rendered.contains("Question 1."), rendered)
            assertTrue(rendered.contains("What is the capital of France?"))
            // reset: only the system prompt is left, whose tokens the next turn reuses.
            chat.reset()
            assertEquals(1, chat.info.nMessages)
            chat.addMessage("user", "Hello!")
            chat.replyBlocking(GenerateParams(maxTokens = 2, sampler = SamplerParams(temperature = 0f))) { true }
            assertTrue(chat.lastResult!!.promptReused >= tokens(system, addSpecial = false), "${chat.lastResult}")
        }
    }

    @Test
    fun aRunningReplyGetsBusyFromAnotherThread() {
        chat().use { chat ->
            chat.addMessage("user", questions[0])
            val inside = CountDownLatch(1)
            val release = CountDownLatch(1)
            val worker = thread {
                chat.replyBlocking(GenerateParams(maxTokens = 2, sampler = SamplerParams(temperature = 0f))) {
                    inside.countDown()
                    release.await()
                    true
                }
            }
            assertTrue(inside.await(60, TimeUnit.SECONDS))
            assertEquals("EMBER_ERR_BUSY", assertThrows<EmberException> { chat.addMessage("user", "now") }.statusName)
            release.countDown()
            worker.join()
            assertFalse(chat.isClosed)
            assertEquals(3, chat.info.nMessages)
        }
    }
}
