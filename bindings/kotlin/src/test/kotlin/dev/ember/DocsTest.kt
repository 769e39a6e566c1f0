package dev.ember

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import java.io.ByteArrayOutputStream
import java.io.File
import java.io.PrintStream

/** docs/kotlin-android.md shows examples/Generate.kt, which the build compiles and this runs. */
@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class DocsTest {
    private val example = File(TestSupport.root, "bindings/kotlin/examples/Generate.kt")

    @Test
    fun theDocsPageShowsTheExampleByteForByte() {
        // The docs pages mark each program they show with the file it is (see tools/check-docs).
        val page = File(TestSupport.root, "docs/kotlin-android.md").readText()
        val marked = Regex("<!-- example: bindings/kotlin/examples/Generate.kt -->\n```kotlin\n(.*?)```", RegexOption.DOT_MATCHES_ALL)
        val block = marked.find(page)?.groupValues?.get(1)
        assertEquals(example.readText(), block, "the marked kotlin block of docs/kotlin-android.md")
        // "under 10 lines of use": the lines of main's body that do something.
        val body = example.readLines().dropWhile { !it.startsWith("fun main") }.drop(1).filter { it.trim() !in setOf("", "}") }
        assert(body.size < 10) { "${body.size} lines: $body" }
    }

    @Test
    fun theExamplePrintsWhatTheCliPrints() {
        val prompt = "The capital of France is"
        val expected = TestSupport.run(listOf(TestSupport.cli, "run", "-m", TestSupport.model, "-p", prompt, "-n", "32", "--temp", "0"))
        val out = ByteArrayOutputStream()
        val saved = System.out
        System.setOut(PrintStream(out, true, "UTF-8"))
        try {
            // The example is in the root package, which Kotlin code elsewhere cannot import.
            Class.forName("GenerateKt").getMethod("main", Array<String>::class.java).invoke(null, arrayOf(TestSupport.model))
        } finally {
            System.setOut(saved)
        }
        assertEquals(expected, out.toString("UTF-8"))
    }
}
