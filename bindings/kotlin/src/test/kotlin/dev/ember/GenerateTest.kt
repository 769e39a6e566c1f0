package dev.ember

import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertSame
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.Timeout
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir
import java.io.File
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicReference
import kotlin.concurrent.thread

@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@Timeout(value = 180, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class GenerateTest {
    private val model = Model.load(TestSupport.model)
    private val prompt = "The capital of France is"
    private val greedy = SamplerParams(temperature = 0f)
    private val greedy32 = GenerateParams(maxTokens = 32, sampler = greedy)

    /** `ember run --temp 0 --ids`: the CLI's greedy token ids for [prompt]. */
    private val cliIds: IntArray by lazy {
        TestSupport.ids(
            TestSupport.run(listOf(TestSupport.cli, "run", "-m", TestSupport.model, "-p", prompt, "-n", "32", "--temp", "0", "--ids")),
        )
    }

    // One worker thread per context keeps the machine's cores for the parallel tests.
    private fun context(nCtx: Int = 512) = model.newContext(ContextParams(nCtx = nCtx, nThreads = 1))

    @AfterAll
    fun closeModel() = model.close()

    @Test
    fun greedy32TokensEqualTheCli() = runBlocking {
        assertEquals(32, cliIds.size)
        context().use { ctx ->
            val pieces = ctx.generate(prompt, greedy32).toList()
            assertEquals(model.detokenize(cliIds), pieces.joinToString(""))
            assertEquals(model.tokenize(prompt, parseSpecial = true).size + 32, ctx.nPast)
        }
    }

    /** The same by hand: decode, sample, accept, token by token. */
    @Test
    fun decodeAndSampleByHandEqualTheCli() {
        context().use { ctx ->
            Sampler(model, greedy).use { sampler ->
                ctx.decode(model.tokenize(prompt, parseSpecial = true))
                val logits = ctx.logits()
                assertEquals(model.info.nVocab, logits.size)
                assertEquals(cliIds[0], logits.indices.maxByOrNull { logits[it] })
                val ids = IntArray(32)
                for (i in ids.indices) {
                    ids[i] = sampler.sample(ctx)
                    sampler.accept(ids[i])
                    ctx.decode(intArrayOf(ids[i]))
                }
                assertArrayEquals(cliIds, ids)
                // Rolled back five tokens, the logits given by hand choose the same token again.
                assertEquals(ids[5], sampler.sample(logitsAfter(ctx, ids, 5)))
            }
        }
    }

    // The logits after prompt + ids[0 until n], recomputed by rolling the context back.
    private fun logitsAfter(ctx: Context, ids: IntArray, n: Int): FloatArray {
        ctx.truncate(model.tokenize(prompt, parseSpecial = true).size + n - 1)
        ctx.decode(intArrayOf(ids[n - 1]))
        return ctx.logits()
    }

    @Test
    fun cancellingTheFlowAfterThreePiecesStopsWithinOneMoreToken() = runBlocking {
        context().use { ctx ->
            val promptTokens = model.tokenize(prompt, parseSpecial = true).size
            val long = GenerateParams(maxTokens = 200, sampler = greedy)
            // take(3): the collector stops after the third piece.
            assertEquals(3, ctx.generate(prompt, long).take(3).toList().size)
            // ember streams a token's piece before decoding it: after 3 pieces, 2 tokens are in
            // the KV cache, and the generation may have decoded at most 2 more (the third
            // piece's, and the one whose piece the collector never took) before stopping.
            val afterTake = ctx.nPast - promptTokens
            assertTrue(afterTake in 2..4, "decoded $afterTake tokens after 3 pieces")
            // Cancelling the collecting coroutine.
            ctx.reset()
            val got = ArrayList<String>()
            val job = launch(Dispatchers.Default) {
                ctx.generate(prompt, long).collect {
                    got += it
                    if (got.size == 3) cancel()
                }
            }
            job.join()
            assertEquals(3, got.size)
            val afterCancel = ctx.nPast - promptTokens
            assertTrue(afterCancel in 2..4, "decoded $afterCancel tokens after 3 pieces")
            // The context is free again and continues the conversation.
            assertTrue(ctx.generate("", GenerateParams(maxTokens = 2, sampler = greedy)).toList().isNotEmpty())
        }
    }

    @Test
    fun twoThreadsWithTheirOwnContextsOnOneModelGiveIdenticalText() = runBlocking {
        val texts = (1..2).map {
            async(Dispatchers.Default) {
                context().use { ctx -> ctx.generate(prompt, greedy32).toList().joinToString("") }
            }
        }.awaitAll()
        assertEquals(texts[0], texts[1])
        assertEquals(model.detokenize(cliIds), texts[0])
    }

    @Test
    fun closingAContextWhileAnotherThreadGeneratesIsSafe() {
        val ctx = context()
        val started = CountDownLatch(1)
        val outcome = AtomicReference<Any>()
        val pieces = ArrayList<String>()
        val worker = thread {
            outcome.set(
                try {
                    ctx.generateBlocking(prompt, GenerateParams(maxTokens = 400, sampler = greedy)) {
                        pieces += it
                        started.countDown()
                        true
                    }
                } catch (e: Exception) {
                    e
                },
            )
        }
        assertTrue(started.await(60, TimeUnit.SECONDS))
        ctx.close() // aborts the generation; the native context is freed when it returns
        assertTrue(ctx.isClosed)
        assertThrows<IllegalStateException> { ctx.nPast }
        worker.join(60_000)
        assertFalse(worker.isAlive)
        val e = outcome.get()
        assertTrue(e is EmberException && e.statusName == "EMBER_ERR_ABORTED", "$e")
        assertTrue(pieces.size in 1 until 400)
        assertTrue(ctx.isFreed)
        ctx.close()
    }

    @Test
    fun closingAContextWhileAFlowGeneratesFailsTheFlow() = runBlocking {
        val ctx = context()
        val first = CompletableDeferred<Unit>()
        val result = async(Dispatchers.Default) {
            runCatching { ctx.generate(prompt, GenerateParams(maxTokens = 400, sampler = greedy)).collect { first.complete(Unit) } }
        }
        first.await()
        ctx.close()
        val e = result.await().exceptionOrNull()
        assertTrue(e is EmberException && e.statusName == "EMBER_ERR_ABORTED", "$e")
        assertTrue(ctx.isFreed)
    }

    @Test
    fun aSecondThreadOnTheSameContextGetsBusy() {
        context().use { ctx ->
            val inside = CountDownLatch(1)
            val release = CountDownLatch(1)
            val worker = thread {
                ctx.generateBlocking(prompt, GenerateParams(maxTokens = 2, sampler = greedy)) {
                    inside.countDown()
                    release.await()
                    true
                }
            }
            assertTrue(inside.await(60, TimeUnit.SECONDS))
            val busy = assertThrows<EmberException> { ctx.decode(intArrayOf(1)) }
            assertEquals("EMBER_ERR_BUSY", busy.statusName)
            assertTrue(busy.message!!.isNotEmpty())
            release.countDown()
            worker.join()
            ctx.nPast // free again
        }
    }

    @Test
    fun exceptionsFromTheCallbackAreRethrown() {
        context().use { ctx ->
            val boom = IllegalStateException("from onPiece")
            assertSame(boom, assertThrows<IllegalStateException> { ctx.generateBlocking(prompt, greedy32) { throw boom } })
            val r = ctx.generateBlocking("", GenerateParams(maxTokens = 3, sampler = greedy)) { true }
            assertEquals(StopReason.MAX_TOKENS, r.stopReason)
            assertEquals(3, r.generatedTokens)
        }
    }

    @Test
    fun stopStringsAndResult() {
        val full = context().use { ctx -> StringBuilder().also { sb -> ctx.generateBlocking(prompt, greedy32) { sb.append(it); true } }.toString() }
        // Stop at the second word of the greedy text.
        val stop = full.trim().split(" ")[1]
        context().use { ctx ->
            val sb = StringBuilder()
            val r = ctx.generateBlocking(prompt, greedy32.copy(stop = listOf(stop, "never appears"))) { sb.append(it); true }
            assertEquals(StopReason.STOP_STRING, r.stopReason)
            assertEquals(full.substring(0, full.indexOf(stop)), sb.toString())
            assertEquals(5, r.promptTokens)
            assertTrue(r.generatedTokens in 1..32 && r.generateMs >= 0.0 && r.promptMs >= 0.0, "$r")
        }
        context().use { ctx ->
            val r = ctx.generateBlocking(prompt, greedy32) { false }
            assertEquals(StopReason.CALLBACK, r.stopReason)
        }
    }

    @Test
    fun stateSaveAndLoad(@TempDir tmp: File) {
        context().use { ctx ->
            val eight = GenerateParams(maxTokens = 8, sampler = greedy)
            fun next() = StringBuilder().also { sb -> ctx.generateBlocking("", eight) { sb.append(it); true } }.toString()
            ctx.generateBlocking(prompt, eight) { true }
            val nPast = ctx.nPast
            val state = ctx.saveState()
            val file = File(tmp, "state.bin").path
            ctx.saveStateFile(file)
            assertArrayEquals(state, File(file).readBytes())
            val continuation = next()
            assertEquals(nPast + 8, ctx.nPast)
            ctx.loadState(state)
            assertEquals(nPast, ctx.nPast)
            assertEquals(continuation, next())
            ctx.reset()
            assertEquals(0, ctx.nPast)
            ctx.loadStateFile(file)
            assertEquals(continuation, next())
            // A corrupt state is refused and leaves the context as it was.
            val before = ctx.nPast
            val bad = state.copyOf().also { it[it.size / 2] = (it[it.size / 2] + 1).toByte() }
            assertEquals("EMBER_ERR_INVALID_STATE", assertThrows<EmberException> { ctx.loadState(bad) }.statusName)
            assertEquals("EMBER_ERR_INVALID_STATE", assertThrows<EmberException> { ctx.loadState(state.copyOf(100)) }.statusName)
            assertEquals(before, ctx.nPast)
        }
    }

    @Test
    fun seededSamplingIsReproducible() {
        val params = SamplerParams(temperature = 1.2f, seed = 42)
        fun run(sampler: Sampler? = null, p: SamplerParams = params) = context().use { ctx ->
            StringBuilder().also { sb ->
                ctx.generateBlocking(prompt, GenerateParams(maxTokens = 24, sampler = p), sampler) { sb.append(it); true }
            }.toString()
        }
        val a = run()
        assertEquals(a, run())
        assertNotEquals(a, run(p = params.copy(seed = 43)))
        Sampler(model, params).use { s ->
            assertEquals(a, run(s))
            s.reset()
            assertEquals(a, run(s))
        }
        // A banned token never appears.
        val first = model.tokenize(a)[0]
        val banned = context().use { ctx ->
            StringBuilder().also { sb ->
                val p = GenerateParams(maxTokens = 1, sampler = params.copy(logitBias = mapOf(first to Float.NEGATIVE_INFINITY)))
                ctx.generateBlocking(prompt, p) { sb.append(it); true }
            }.toString()
        }
        assertFalse(banned.isNotEmpty() && model.tokenize(banned)[0] == first, banned)
    }

    @Test
    fun contextInfoAndErrors() {
        context(nCtx = 32).use { ctx ->
            val info = ctx.info
            assertEquals(32, info.nCtx)
            assertEquals(1, info.nThreads)
            assertEquals(KvType.F16, info.kvType)
            assertEquals(49152, info.nVocab)
            assertTrue(info.sizeBytes > 0)
            assertEquals("EMBER_ERR_INVALID_ARGUMENT", assertThrows<EmberException> { ctx.logits() }.statusName)
            assertEquals("EMBER_ERR_INVALID_TOKEN", assertThrows<EmberException> { ctx.decode(intArrayOf(1 shl 30)) }.statusName)
            val full = assertThrows<EmberException> { ctx.generateBlocking(prompt, GenerateParams(maxTokens = 40)) { true } }
            assertEquals("EMBER_ERR_CONTEXT_FULL", full.statusName)
            ctx.reset()
            val shifted = ctx.generateBlocking(prompt, GenerateParams(maxTokens = 40, contextShift = true, nKeep = 2, sampler = greedy)) { true }
            assertEquals(40, shifted.generatedTokens)
        }
        model.newContext(ContextParams(logitsAll = true, nCtx = 64, nThreads = 1)).use { ctx ->
            val toks = model.tokenize(prompt)
            ctx.decodeAll(toks)
            assertArrayEquals(ctx.logits(), ctx.logits(toks.size - 1))
            assertEquals(cliIds[0], ctx.logits(toks.size - 1).let { l -> l.indices.maxByOrNull { l[it] } })
        }
    }
}
