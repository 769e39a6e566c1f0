package dev.ember

import com.sun.jna.Memory
import com.sun.jna.ptr.PointerByReference
import dev.ember.jna.EmberNative
import dev.ember.jna.ember_context
import dev.ember.jna.ember_context_info
import dev.ember.jna.ember_generate_result
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.Flow

/**
 * One conversation with a model: its KV cache, buffers and worker threads. Not thread-safe: use
 * a context from one thread (or coroutine) at a time; a call from a second thread while one runs
 * fails with EMBER_ERR_BUSY. Many contexts can share one [Model], each on its own thread.
 *
 * [close] is safe at any time, from any thread: a generation running on another thread is
 * aborted (it fails with EMBER_ERR_ABORTED) and the native context is freed when it returns.
 */
class Context private constructor(
    /** The model this context was made for. */
    val model: Model,
    internal val handle: ember_context,
) : NativeObject("Context") {
    /** A context for [model]. It holds a use of the model, so the model may be closed first. */
    @JvmOverloads
    constructor(model: Model, params: ContextParams = ContextParams()) : this(model, newHandle(model, params))

    private companion object {
        fun newHandle(model: Model, params: ContextParams): ember_context {
            model.acquire()
            try {
                val out = PointerByReference()
                checkStatus(EmberNative.ember_context_new(model.handle, params.toNative(), out))
                return ember_context(out.value) // the model's use is now this context's
            } catch (t: Throwable) {
                model.release()
                throw t
            }
        }
    }

    override fun free() {
        EmberNative.ember_context_free(handle)
        model.release()
    }

    // Stops a call running on another thread; a request made while nothing runs is dropped.
    override fun onClose() {
        EmberNative.ember_context_abort(handle)
    }

    /** Positions filled (prompt and generated tokens so far). */
    val nPast: Int
        get() = withHandle {
            val out = Memory(4)
            checkStatus(EmberNative.ember_context_n_past(handle, out))
            out.getInt(0)
        }

    /** The settings in effect and the memory the context holds. */
    val info: ContextInfo
        get() = withHandle {
            val i = ember_context_info()
            i.struct_size = i.size()
            checkStatus(EmberNative.ember_context_get_info(handle, i))
            ContextInfo(i)
        }

    /** Forgets every position: the next call starts a new conversation. */
    fun reset() = withHandle { checkStatus(EmberNative.ember_context_reset(handle)) }

    /** Keeps only the first [nPast] positions (rolls the conversation back). */
    fun truncate(nPast: Int) = withHandle { checkStatus(EmberNative.ember_context_truncate(handle, nPast)) }

    /** Appends [tokens] and runs the model over them; [logits] then gives the next-token logits. */
    fun decode(tokens: IntArray) = withHandle {
        checkStatus(EmberNative.ember_decode(handle, nativeInts(tokens), sizeT(tokens.size)))
    }

    /** Like [decode], keeping the logits after every token (needs [ContextParams.logitsAll]). */
    fun decodeAll(tokens: IntArray) = withHandle {
        checkStatus(EmberNative.ember_decode_all(handle, nativeInts(tokens), sizeT(tokens.size)))
    }

    /** A copy of the next-token logits after the last decoded token (n_vocab floats). */
    fun logits(): FloatArray = withHandle {
        val p = PointerByReference()
        val n = Memory(SIZE_T_BYTES)
        checkStatus(EmberNative.ember_context_logits(handle, p, n))
        p.value.getFloatArray(0, n.getSizeT().toInt())
    }

    /** A copy of the logits after token [i] of the last [decodeAll] batch. */
    fun logits(i: Int): FloatArray = withHandle {
        val p = PointerByReference()
        val n = Memory(SIZE_T_BYTES)
        checkStatus(EmberNative.ember_context_logits_ith(handle, sizeT(i), p, n))
        p.value.getFloatArray(0, n.getSizeT().toInt())
    }

    /** Asks the decode or generation running on this context to stop (from any thread). */
    fun abort() = withHandle { checkStatus(EmberNative.ember_context_abort(handle)) }

    /** The context's state (tokens, KV cache, last logits), for [loadState]. */
    fun saveState(): ByteArray = withHandle {
        fetchBuffer(false) { b, c, n -> EmberNative.ember_state_save(handle, b, c, n) }
    }

    /** Replaces the context's contents with a state from [saveState]; checked completely first. */
    fun loadState(state: ByteArray) = withHandle {
        checkStatus(EmberNative.ember_state_load(handle, nativeBytes(state), sizeT(state.size)))
    }

    /** Saves the state to the file at [path], replacing it. */
    fun saveStateFile(path: String) = withHandle {
        checkStatus(EmberNative.ember_state_save_file(handle, cString(path)))
    }

    /** Loads a state saved with [saveStateFile]. */
    fun loadStateFile(path: String) = withHandle {
        checkStatus(EmberNative.ember_state_load_file(handle, cString(path)))
    }

    /**
     * Generates a continuation of [prompt] (appended to the conversation in the context) and
     * streams it in whole UTF-8 pieces. The flow is cold: each collection generates anew. The
     * work runs on [Dispatchers.IO] at most one piece ahead of the collector; when the collector
     * stops (cancellation, `take(n)`, an exception), the generation is aborted and the flow
     * completes once ember has returned, so the context is free again. [sampler]: null makes one
     * from [GenerateParams.sampler] for this call.
     */
    @JvmOverloads
    fun generate(prompt: String, params: GenerateParams = GenerateParams(), sampler: Sampler? = null): Flow<String> =
        pieceFlow(::abort) { onPiece -> generateBlocking(prompt, params, sampler, onPiece) }

    /**
     * Generates on the calling thread, handing each whole-UTF-8 piece to [onPiece], which returns
     * false to stop ([StopReason.CALLBACK]). An exception from [onPiece] stops the generation and
     * is rethrown here.
     */
    @JvmOverloads
    fun generateBlocking(
        prompt: String,
        params: GenerateParams = GenerateParams(),
        sampler: Sampler? = null,
        onPiece: (String) -> Boolean,
    ): GenerateResult = withHandle {
        withSampler(model, params.sampler, sampler) { s ->
            val keep = ArrayList<Any>()
            keepAlive(keep) {
                val native = params.toNative(keep)
                val result = ember_generate_result()
                result.struct_size = result.size()
                val callback = PieceCallback(onPiece)
                val bytes = prompt.toByteArray(Charsets.UTF_8)
                val status = EmberNative.ember_generate(handle, s, nativeBytes(bytes), sizeT(bytes.size), native, callback.native, null, result)
                callback.rethrow()
                checkStatus(status)
                GenerateResult(result)
            }
        }
    }
}
