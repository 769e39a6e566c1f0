package dev.ember

import com.sun.jna.Memory
import com.sun.jna.Native
import com.sun.jna.Pointer
import dev.ember.jna.EMBER_ABI_VERSION
import dev.ember.jna.EMBER_ERR_BUFFER_TOO_SMALL
import dev.ember.jna.EMBER_OK
import dev.ember.jna.EmberNative
import dev.ember.jna.SizeT
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.atomic.AtomicLong

/** The library itself: versions, checked once against the header the bindings were made from. */
object Ember {
    /** The loaded library's version, e.g. "0.1.0". */
    @JvmStatic
    val version: String by lazy { EmberNative.ember_version()!!.getString(0, "UTF-8") }

    /** The loaded library's C ABI version; the bindings need [EMBER_ABI_VERSION]. */
    @JvmStatic
    val abiVersion: Int get() = EmberNative.ember_abi_version()

    /** The name of a status code ("EMBER_ERR_IO"), as ember spells it. */
    @JvmStatic
    fun statusName(status: Int): String = EmberNative.ember_status_name(status)!!.getString(0, "UTF-8")

    private val checked: Unit by lazy {
        val abi = EmberNative.ember_abi_version()
        if (abi != EMBER_ABI_VERSION) {
            throw UnsatisfiedLinkError(
                "libember has C ABI version $abi, these bindings were generated for $EMBER_ABI_VERSION",
            )
        }
    }

    /** Loads the library (JNA's search: jna.library.path, system paths, class path) and checks its ABI. */
    internal fun ensureLoaded() = checked
}

/**
 * An ember call failed. [statusName] is the C status ("EMBER_ERR_MALFORMED_MODEL"), [status]
 * its number, and the message is ember's own (`ember_last_error()`), read on the thread of the
 * failed call.
 */
class EmberException(
    val status: Int,
    val statusName: String,
    message: String,
) : RuntimeException("$message ($statusName)")

/** Throws [EmberException] unless [status] is EMBER_OK; call right after the native call, on its thread. */
internal fun checkStatus(status: Int) {
    if (status != EMBER_OK) throw failure(status)
}

internal fun failure(status: Int): EmberException {
    // The message first: it is thread-local and lives until the next ember call on this thread.
    val message = EmberNative.ember_last_error()?.getString(0, "UTF-8").orEmpty()
    return EmberException(status, Ember.statusName(status), message)
}

internal val SIZE_T_BYTES = Native.SIZE_T_SIZE.toLong()

internal fun Pointer.getSizeT(offset: Long = 0): Long =
    if (SIZE_T_BYTES == 8L) getLong(offset) else getInt(offset).toLong() and 0xFFFFFFFFL

internal fun sizeT(n: Int) = SizeT(n.toLong())

internal fun sizeT(n: Long) = SizeT(n)

/** `s` as NUL-terminated UTF-8 (paths, keys, stop strings). */
internal fun cString(s: String): Memory {
    require(s.indexOf('\u0000') < 0) { "text for ember may not contain NUL characters" }
    val b = s.toByteArray(Charsets.UTF_8)
    val m = Memory(b.size + 1L)
    m.write(0, b, 0, b.size)
    m.setByte(b.size.toLong(), 0)
    return m
}

/** Bytes for a (pointer, length) argument; null for none, which ember accepts with length 0. */
internal fun nativeBytes(b: ByteArray): Memory? {
    if (b.isEmpty()) return null
    val m = Memory(b.size.toLong())
    m.write(0, b, 0, b.size)
    return m
}

internal fun nativeInts(a: IntArray): Memory? {
    if (a.isEmpty()) return null
    val m = Memory(a.size * 4L)
    m.write(0, a, 0, a.size)
    return m
}

/**
 * Runs one of ember's (buf, capacity, needed) calls: a size query, then the call with a buffer of
 * that size (again if the size changed in between). Returns the bytes, without the terminating
 * NUL when [text].
 */
internal inline fun fetchBuffer(text: Boolean, call: (buf: Pointer?, capacity: SizeT, needed: Pointer) -> Int): ByteArray {
    val needed = Memory(SIZE_T_BYTES)
    checkStatus(call(null, SizeT(0), needed))
    while (true) {
        val n = needed.getSizeT()
        if (n == 0L) return ByteArray(0)
        val buf = Memory(n)
        val status = call(buf, SizeT(n), needed)
        if (status == EMBER_ERR_BUFFER_TOO_SMALL) continue
        checkStatus(status)
        val len = if (text) n - 1 else n
        return buf.getByteArray(0, len.toInt())
    }
}

/**
 * A native handle shared safely between threads, the way uniffi does it: every call holds a use,
 * [close] marks the object closed and gives up the owner's use, and whoever gives up the last use
 * frees the native object. So closing while another thread is inside a call is safe (the handle is
 * freed when that call returns), a call after [close] throws [IllegalStateException], and closing
 * twice does nothing.
 */
abstract class NativeObject internal constructor(private val kind: String) : AutoCloseable {
    // 1 for the owner (released by close) plus 1 per call in progress.
    private val uses = AtomicLong(1)
    private val closed = AtomicBoolean(false)

    /** Whether [close] was called. */
    val isClosed: Boolean get() = closed.get()

    /** True once the native object is gone (closed and no call in progress). */
    internal val isFreed: Boolean get() = uses.get() == 0L

    /** Frees the native object; runs exactly once, after [close] and the last call. */
    protected abstract fun free()

    /** Runs at [close], before the owner's use is given up (the handle is still valid). */
    protected open fun onClose() {}

    /** `evenIfClosed`: for the library's own uses that must outlive the user's close (see Context). */
    internal fun acquire(evenIfClosed: Boolean = false) {
        while (true) {
            val n = uses.get()
            if (n == 0L || (!evenIfClosed && closed.get())) throw IllegalStateException("$kind is closed")
            check(n < Long.MAX_VALUE) { "$kind: too many uses" }
            if (uses.compareAndSet(n, n + 1)) return
        }
    }

    internal fun release() {
        if (uses.decrementAndGet() == 0L) free()
    }

    internal inline fun <R> withHandle(block: () -> R): R {
        acquire()
        try {
            return block()
        } finally {
            release()
        }
    }

    /** Calls in progress on other threads (for [onClose]). */
    internal val usesInProgress: Long get() = uses.get() - 1

    override fun close() {
        if (closed.compareAndSet(false, true)) {
            try {
                onClose()
            } finally {
                release()
            }
        }
    }
}
