package dev.ember

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import java.io.ByteArrayOutputStream
import java.io.File
import java.io.PrintStream

/** docs/kotlin-android.md shows examples/Generate.kt and examples/Chat.kt, which the build compiles and this runs. */
@Timeout(value = 180, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class DocsTest {
    private val page = File(TestSupport.root, "docs/kotlin-android.md")

    private fun example(name: String) = File(TestSupport.root, "bindings/kotlin/examples/$name")

    // The docs pages mark each program they show with the file it is (see tools/check-docs).
    private fun assertShownByteForByte(name: String) {
        val marked = Regex("<!-- example: bindings/kotlin/examples/${Regex.escape(name)} -->\n```kotlin\n(.*?)```", RegexOption.DOT_MATCHES_ALL)
        val block = marked.find(page.readText())?.groupValues?.get(1)
        assertEquals(example(name).readText(), block, "the marked kotlin block of docs/kotlin-android.md for $name")
    }

    /** What the example's main (in the root package, which Kotlin code elsewhere cannot import) prints. */
    private fun runExample(className: String): String {
        val out = ByteArrayOutputStream()
        val saved = System.out
        System.setOut(PrintStream(out, true, "UTF-8"))
        try {
            Class.forName(className).getMethod("main", Array<String>::class.java).invoke(null, arrayOf(TestSupport.model))
        } finally {
            System.setOut(saved)
        }
        return out.toString("UTF-8")
    }

    @Test
    fun theDocsPageShowsTheExampleByteForByte() {
        assertShownByteForByte("Generate.kt")
        // "under 10 lines of use": the lines of main's body that do something.
        val body = example("Generate.kt").readLines().dropWhile { !it.startsWith("fun main") }.drop(1).filter { it.trim() !in setOf("", "}") }
        assert(body.size < 10) { "${body.size} lines: $body" }
    }

    @Test
    fun theExamplePrintsWhatTheCliPrints() {
        val prompt = "The capital of France is"
        val expected = TestSupport.run(listOf(TestSupport.cli, "run", "-m", TestSupport.model, "-p", prompt, "-n", "32", "--temp", "0"))
        assertEquals(expected, runExample("GenerateKt"))
    }

    @Test
    fun theChatExampleIsShownAndRepliesAsTheCliWithTheSecondTurnReusingTheFirst() {
        assertShownByteForByte("Chat.kt")
        val out = runExample("ChatKt")
        val turn = Regex("(.*?)\n\\[(\\d+) new prompt tokens, (\\d+) reused]\n", RegexOption.DOT_MATCHES_ALL)
        val turns = turn.findAll(out).toList()
        assertEquals(2, turns.size, out)
        assertEquals(out.length, turns.sumOf { it.value.length }, out)
        // The first reply is what `ember run --chat` replies to the same system prompt and question.
        val cli = TestSupport.run(
            listOf(
                TestSupport.cli, "run", "-m", TestSupport.model, "--chat", "--system", "Answer in one short sentence.",
                "-p", "What is the capital of France?", "-n", "64", "--temp", "0",
            ),
        )
        assertEquals(cli, turns[0].groupValues[1] + "\n")
        val (processed1, reused1) = turns[0].groupValues.drop(2).map { it.toInt() }
        val (processed2, reused2) = turns[1].groupValues.drop(2).map { it.toInt() }
        assertEquals(0, reused1)
        // Turn 2 reuses turn 1's prompt and reply from the cache and processes only what follows.
        assertTrue(reused2 > processed1 && processed2 < reused2, out)
    }
}
