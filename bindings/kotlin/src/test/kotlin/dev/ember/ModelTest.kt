package dev.ember

import com.sun.jna.Library
import com.sun.jna.Native
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertSame
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.Timeout
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir
import java.io.File

@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class ModelTest {
    private val model = Model.load(TestSupport.model)

    @AfterAll
    fun closeModel() = model.close()

    private val texts = listOf(
        "Hello world",
        "The capital of France is",
        " leading and  double  spaces\tand a tab",
        "naïve café, 日本語, Ελληνικά, emoji 🔥🤖",
        "line one\nline two\r\n\nend",
        "<|im_start|>user\nhi<|im_end|>",
        "numbers 1234567 3.14159 and code: fn main() { println!(\"{}\", x); }",
        "",
    )

    private fun cliTokenize(text: String, vararg flags: String, tmp: File): IntArray {
        val f = File.createTempFile("text", ".txt", tmp)
        f.writeText(text, Charsets.UTF_8)
        return TestSupport.ids(
            TestSupport.run(listOf(TestSupport.cli, "tokenize", "-m", TestSupport.model, "--ids", *flags, "-f", f.path)),
        )
    }

    @Test
    fun tokenizeEqualsTheCli(@TempDir tmp: File) {
        for (t in texts) {
            assertArrayEquals(cliTokenize(t, tmp = tmp), model.tokenize(t), "tokenize($t)")
            assertArrayEquals(cliTokenize(t, "--special", tmp = tmp), model.tokenize(t, parseSpecial = true), "special: $t")
            assertArrayEquals(cliTokenize(t, "--no-bos", tmp = tmp), model.tokenize(t, addSpecial = false), "no-bos: $t")
        }
    }

    @Test
    fun detokenizeRoundTrips() {
        for (t in texts) assertEquals(t, model.detokenize(model.tokenize(t)), t)
        val special = model.tokenize("<|im_start|>user", parseSpecial = true)
        assertEquals("user", model.detokenize(special))
        assertEquals("<|im_start|>user", model.detokenize(special, unparseSpecial = true))
        assertEquals("Hello", String(model.tokenToPiece(model.tokenize("Hello")[0]), Charsets.UTF_8))
    }

    @Test
    fun infoAndMetadata() {
        val info = model.info
        assertEquals(49152, info.nVocab)
        assertEquals(576, info.nEmbd)
        assertEquals(30, info.nLayer)
        assertEquals(9, info.nHead)
        assertEquals(3, info.nHeadKv)
        assertTrue(info.nParams > 100_000_000 && info.sizeBytes > 50_000_000, "$info")
        assertEquals("llama", model.architecture)
        assertEquals("llama", model.meta("general.architecture"))
        assertEquals("8192", model.meta("llama.context_length"))
        assertNull(model.meta("no.such.key"))
        assertTrue(model.chatTemplate!!.contains("<|im_start|>"))
        val eos = model.specialToken(SpecialToken.EOS)
        assertNotNull(eos)
        assertTrue(model.isEog(eos!!))
        assertFalse(model.isEog(model.tokenize("Hello")[0]))
        assertEquals("EMBER_ERR_INVALID_TOKEN", assertThrows<EmberException> { model.isEog(1 shl 30) }.statusName)
    }

    @Test
    fun corruptFilesAreErrorsNotCrashes(@TempDir tmp: File) {
        val garbage = File(tmp, "garbage.gguf").apply { writeBytes(ByteArray(4096) { (it * 31 + 7).toByte() }) }
        val badHeader = File(tmp, "header.gguf").apply {
            writeBytes("GGUF".toByteArray() + byteArrayOf(3, 0, 0, 0) + ByteArray(64) { 0xFF.toByte() })
        }
        val truncated = File(tmp, "truncated.gguf").apply {
            writeBytes(File(TestSupport.model).inputStream().use { it.readNBytes(1 shl 20) })
        }
        for (f in listOf(garbage, badHeader, truncated)) {
            val e = assertThrows<EmberException>(f.name) { Model.load(f.path).close() }
            assertEquals("EMBER_ERR_MALFORMED_MODEL", e.statusName, "${f.name}: ${e.message}")
            assertEquals(dev.ember.jna.EMBER_ERR_MALFORMED_MODEL, e.status)
            assertTrue(e.message!!.startsWith("ember_model_load: "), e.message)
        }
        val missing = assertThrows<EmberException> { Model.load(File(tmp, "missing.gguf").path) }
        assertEquals("EMBER_ERR_IO", missing.statusName)
        assertTrue(missing.message!!.contains("missing.gguf"), missing.message)
    }

    @Test
    fun useAfterCloseThrowsAndCloseTwiceIsHarmless() {
        val m = Model.load(TestSupport.model)
        val ctx = m.newContext(ContextParams(nCtx = 256))
        val sampler = m.newSampler()
        m.close()
        m.close()
        assertTrue(m.isClosed)
        assertThrows<IllegalStateException> { m.info }
        assertThrows<IllegalStateException> { m.tokenize("x") }
        assertThrows<IllegalStateException> { m.newContext() }
        // What was made from it keeps working: the native side keeps the model alive.
        val text = StringBuilder()
        ctx.generateBlocking("Hello", GenerateParams(maxTokens = 4), sampler) { text.append(it); true }
        assertTrue(text.isNotEmpty())
        for (o in listOf<NativeObject>(ctx, sampler)) {
            o.close()
            o.close()
            assertTrue(o.isFreed)
        }
        assertThrows<IllegalStateException> { ctx.nPast }
        assertThrows<IllegalStateException> { sampler.reset() }
        assertTrue(m.isFreed)
    }

    @Test
    fun progressCallback(@TempDir tmp: File) {
        val seen = ArrayList<Float>()
        Model.load(TestSupport.model, ModelParams(progress = { seen.add(it); true })).close()
        assertTrue(seen.isNotEmpty() && seen.last() == 1.0f && seen == seen.sorted(), "$seen")
        val cancelled = assertThrows<EmberException> { Model.load(TestSupport.model, ModelParams(progress = { false })) }
        assertEquals("EMBER_ERR_CANCELLED", cancelled.statusName)
        val boom = IllegalArgumentException("from the callback")
        assertSame(boom, assertThrows<IllegalArgumentException> { Model.load(TestSupport.model, ModelParams(progress = { throw boom })) })
        Model.load(TestSupport.model, ModelParams(useMmap = false)).use { assertEquals(model.info, it.info) }
    }

    private interface LibC : Library {
        fun open(path: String, flags: Int): Int

        fun close(fd: Int): Int
    }

    /** As an Android app loads an uncompressed asset: fd, offset and length inside a bigger file. */
    @Test
    fun loadFromAFileDescriptorAtAnOffset(@TempDir tmp: File) {
        val bundle = File(tmp, "app.apk")
        val modelBytes = File(TestSupport.model).length()
        bundle.outputStream().use { out ->
            out.write(ByteArray(1001) { 'A'.code.toByte() })
            File(TestSupport.model).inputStream().use { it.copyTo(out) }
            out.write("trailing bytes of some other asset".toByteArray())
        }
        val libc = Native.load("c", LibC::class.java)
        val fd = libc.open(bundle.path, 0)
        assertTrue(fd >= 0)
        val m = try {
            Model.loadFd(fd, 1001, modelBytes)
        } finally {
            libc.close(fd) // ember keeps its own duplicate
        }
        m.use {
            assertEquals(model.info, it.info)
            assertArrayEquals(model.tokenize(texts[3]), it.tokenize(texts[3]))
        }
    }
}
