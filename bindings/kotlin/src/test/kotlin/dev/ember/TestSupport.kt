package dev.ember

import java.io.File
import java.util.concurrent.TimeUnit

/** Where the repository, the test model and the ember CLI are (set by the pom, or found from here). */
object TestSupport {
    val root: File by lazy {
        val prop = System.getProperty("ember.root")
        (if (prop != null) File(prop) else File("../..")).canonicalFile
    }

    private val cargoDir: File by lazy {
        System.getProperty("ember.cargo.dir")?.let { File(it) } ?: File(root, "target/release")
    }

    /** SmolLM2-135M-Instruct Q4_1, found or fetched by tools/fetch-models (EMBER_MODELS_DIR). */
    val model: String by lazy {
        System.getProperty("ember.model") ?: run(listOf("python3", File(root, "tools/fetch-models").path, "smollm2")).trim()
    }

    /** The `ember` CLI of the same cargo build as libember. */
    val cli: String by lazy {
        val f = File(cargoDir, "ember")
        check(f.canExecute()) { "$f is missing: cargo build --release -p ember-cli" }
        f.path
    }

    /** Runs a program and returns its standard output; fails (showing its stderr) on a non-zero exit. */
    fun run(cmd: List<String>, dir: File = root): String {
        val err = File.createTempFile("ember-test", ".stderr")
        try {
            val p = ProcessBuilder(cmd).directory(dir).redirectError(err).start()
            val out = p.inputStream.readBytes().toString(Charsets.UTF_8)
            check(p.waitFor(10, TimeUnit.MINUTES)) { "timed out: $cmd" }
            check(p.exitValue() == 0) { "exit ${p.exitValue()}: $cmd\n${err.readText()}" }
            return out
        } finally {
            err.delete()
        }
    }

    /** "1,2,3\n" -> [1, 2, 3] */
    fun ids(line: String): IntArray =
        line.trim().let { s -> if (s.isEmpty()) IntArray(0) else s.split(",").map { it.trim().toInt() }.toIntArray() }
}
