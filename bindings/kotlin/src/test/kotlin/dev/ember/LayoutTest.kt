package dev.ember

import com.sun.jna.Structure
import com.sun.jna.Union
import dev.ember.jna.EmberNative
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.io.TempDir
import java.io.File
import java.lang.reflect.Modifier
import java.math.BigInteger

/**
 * The generated JNA layer against the C compiler: tools/gen-kotlin-jna also writes a C program
 * per header that prints sizeof/offsetof of every struct and field and every constant's value;
 * here gcc (cc) builds it and JNA's view of the generated classes must agree byte for byte.
 * synthetic.h covers the constructs ember.h does not use yet.
 */
class LayoutTest {
    private val cDir = File(TestSupport.root, "bindings/kotlin/src/test/c")

    @Test
    fun emberHeaderLayoutsMatchTheCCompiler(@TempDir tmp: File) {
        val n = compare(cLayout(File(cDir, "layout.c"), File(TestSupport.root, "include"), tmp))
        assertTrue(n.structs >= 8 && n.consts >= 30, "too few checked: $n")
    }

    @Test
    fun syntheticHeaderLayoutsMatchTheCCompiler(@TempDir tmp: File) {
        val n = compare(cLayout(File(cDir, "synthetic_layout.c"), cDir, tmp))
        assertTrue(n.structs >= 5 && n.fields >= 40, "too few checked: $n")
    }

    /** Every function libember exports has a binding (Native.register fails on the converse). */
    @Test
    fun everyExportedFunctionIsBound() {
        val lib = File(System.getProperty("ember.cargo.dir") ?: "${TestSupport.root}/target/release", "libember.so")
        assumeTrue(lib.exists(), "no $lib (not Linux)")
        val exported = TestSupport.run(listOf("nm", "-D", "--defined-only", lib.path)).lines()
            .map { it.trim().split(Regex("\\s+")) }
            .filter { it.size == 3 && it[1] == "T" && it[2].startsWith("ember_") }
            .map { it[2] }
            .toSortedSet()
        val bound = EmberNative::class.java.declaredMethods
            .filter { Modifier.isNative(it.modifiers) }
            .map { it.name }
            .toSortedSet()
        assertTrue(exported.size >= 40, "exports: $exported")
        assertEquals(exported, bound)
    }

    /** The committed generated files are what the generator makes from the headers now. */
    @Test
    fun generatedFilesAreUpToDate() {
        TestSupport.run(listOf("python3", File(TestSupport.root, "tools/gen-kotlin-jna").path, "--check"))
    }

    private fun cLayout(program: File, include: File, tmp: File): List<String> {
        val exe = File(tmp, program.nameWithoutExtension)
        TestSupport.run(
            listOf("cc", "-std=c17", "-Wall", "-Wextra", "-Werror", "-I", include.path, program.path, "-o", exe.path),
        )
        return TestSupport.run(listOf(exe.path)).lines().filter { it.isNotBlank() }
    }

    data class Counts(var structs: Int = 0, var fields: Int = 0, var consts: Int = 0)

    private fun compare(lines: List<String>): Counts {
        val (pkg, facade) = lines.first().split(" ").let { check(it[0] == "package"); it[1] to it[2] }
        val counts = Counts()
        val cFields = LinkedHashMap<String, MutableList<Triple<String, Long, Long>>>()
        val cSizes = HashMap<String, Long>()
        for (line in lines.drop(1)) {
            val w = line.split(" ", limit = 3)
            when (w[0]) {
                "struct" -> {
                    cSizes[w[1]] = w[2].toLong()
                    cFields[w[1]] = ArrayList()
                }
                "field" -> {
                    val (field, offset, size) = w[2].split(" ")
                    cFields.getValue(w[1]).add(Triple(field, offset.toLong(), size.toLong()))
                }
                "const" -> {
                    checkConstant(Class.forName("$pkg.$facade"), w[1], w[2])
                    counts.consts++
                }
                else -> error("unexpected line: $line")
            }
        }
        for ((name, fields) in cFields) {
            val s = Class.forName("$pkg.$name").getConstructor().newInstance() as Structure
            assertEquals(cSizes[name], s.size().toLong(), "sizeof($name)")
            assertEquals(fields.map { it.first }, fieldOrder(s), "fields of $name")
            for ((field, offset, size) in fields) {
                assertEquals(offset, fieldOffset(s, field).toLong(), "offsetof($name, $field)")
                assertEquals(size, fieldSize(s, field).toLong(), "sizeof($name.$field)")
                counts.fields++
            }
            if (s !is Union) assertNoHoles(name, cSizes.getValue(name), fields)
            counts.structs++
        }
        return counts
    }

    // A field the generator dropped would leave a hole; padding is always less than 8 bytes here.
    private fun assertNoHoles(name: String, size: Long, fields: List<Triple<String, Long, Long>>) {
        var end = 0L
        for ((field, offset, fieldSize) in fields) {
            assertTrue(offset - end < 8, "$name: ${offset - end} bytes before $field")
            end = offset + fieldSize
        }
        assertTrue(size - end < 8, "$name: ${size - end} bytes after the last field")
    }

    private fun checkConstant(facade: Class<*>, name: String, cValue: String) {
        val v = facade.getField(name).get(null)
        when (v) {
            is String -> assertEquals(cValue.removePrefix("\"").removeSuffix("\""), v, name)
            is Double -> assertEquals(cValue.toDouble(), v, name)
            is Int -> assertEquals(BigInteger(cValue), BigInteger.valueOf(v.toLong()), name)
            // 64-bit constants keep their bits: an unsigned value above Long.MAX_VALUE is negative here.
            is Long -> assertEquals(BigInteger(cValue).toLong(), v, name)
            else -> error("$name: unexpected type ${v?.javaClass}")
        }
    }

    private fun fieldOrder(s: Structure): List<String> {
        val m = Structure::class.java.getDeclaredMethod("getFieldOrder")
        m.isAccessible = true
        @Suppress("UNCHECKED_CAST")
        return m.invoke(s) as List<String>
    }

    private fun fieldOffset(s: Structure, field: String): Int {
        val m = Structure::class.java.getDeclaredMethod("fieldOffset", String::class.java)
        m.isAccessible = true
        return m.invoke(s, field) as Int
    }

    private fun fieldSize(s: Structure, field: String): Int {
        val f = s.javaClass.getField(field)
        val m = Structure::class.java.getDeclaredMethod("getNativeSize", Class::class.java, Any::class.java)
        m.isAccessible = true
        return m.invoke(s, f.type, f.get(s)) as Int
    }
}
