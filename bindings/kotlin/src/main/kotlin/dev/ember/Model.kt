package dev.ember

import com.sun.jna.Memory
import com.sun.jna.ptr.PointerByReference
import dev.ember.jna.EMBER_ERR_BUFFER_TOO_SMALL
import dev.ember.jna.EMBER_ERR_NOT_FOUND
import dev.ember.jna.EMBER_OK
import dev.ember.jna.EmberNative
import dev.ember.jna.SizeT
import dev.ember.jna.ember_model
import dev.ember.jna.ember_model_info
import dev.ember.jna.ember_model_params

/**
 * A loaded model: weights (mapped from the file), configuration and tokenizer. Immutable, so it
 * is thread-safe: share one model between any number of [Context]s on any number of threads.
 * Contexts and samplers keep what they need of it alive, so it may be closed before them.
 */
class Model private constructor(internal val handle: ember_model) : NativeObject("Model") {
    companion object {
        /** Loads the GGUF file at [path]. */
        @JvmStatic
        @JvmOverloads
        fun load(path: String, params: ModelParams = ModelParams()): Model {
            val cPath = cString(path)
            return open(params) { p, out -> EmberNative.ember_model_load(cPath, p, out) }
        }

        /**
         * Loads [length] bytes of the open file [fd] from byte [offset] (0 = to the end): a model
         * stored uncompressed inside an Android APK, from `AssetFileDescriptor`'s
         * `parcelFileDescriptor.fd`, `startOffset` and `length`. ember duplicates the descriptor,
         * so the caller may close it as soon as this returns. Unix only.
         */
        @JvmStatic
        @JvmOverloads
        fun loadFd(fd: Int, offset: Long = 0, length: Long = 0, params: ModelParams = ModelParams()): Model =
            open(params) { p, out -> EmberNative.ember_model_load_fd(fd, offset, length, p, out) }

        private inline fun open(params: ModelParams, call: (ember_model_params, PointerByReference) -> Int): Model {
            Ember.ensureLoaded()
            val callbackFailure = arrayOfNulls<Throwable>(1)
            val native = params.toNative(callbackFailure)
            val out = PointerByReference()
            val status = call(native, out)
            callbackFailure[0]?.let { throw it }
            checkStatus(status)
            return Model(ember_model(out.value))
        }
    }

    override fun free() = EmberNative.ember_model_free(handle)

    /** The model's shape and size. */
    val info: ModelInfo
        get() = withHandle {
            val i = ember_model_info()
            i.struct_size = i.size()
            checkStatus(EmberNative.ember_model_get_info(handle, i))
            ModelInfo(i)
        }

    /** `general.architecture`, e.g. "llama". */
    val architecture: String
        get() = withHandle {
            text(fetchBuffer(true) { b, c, n -> EmberNative.ember_model_architecture(handle, b, c, n) })
        }

    /** The Jinja chat template stored in the model, or null when it has none. */
    val chatTemplate: String?
        get() = withHandle {
            notFoundAsNull { text(fetchBuffer(true) { b, c, n -> EmberNative.ember_model_chat_template(handle, b, c, n) }) }
        }

    /** A metadata value rendered as text (numbers in decimal, arrays as "[a, b, ...]"), or null when absent. */
    fun meta(key: String): String? = withHandle {
        val cKey = cString(key)
        notFoundAsNull { text(fetchBuffer(true) { b, c, n -> EmberNative.ember_model_meta(handle, cKey, b, c, n) }) }
    }

    /**
     * The token ids of [text]. [addSpecial] adds BOS/EOS where the model's metadata asks for them;
     * [parseSpecial] turns the text of control tokens ("<|im_start|>") into those tokens.
     */
    @JvmOverloads
    fun tokenize(text: String, addSpecial: Boolean = true, parseSpecial: Boolean = false): IntArray =
        withHandle { tokenizeHeld(text.toByteArray(Charsets.UTF_8), addSpecial, parseSpecial) }

    private fun tokenizeHeld(bytes: ByteArray, addSpecial: Boolean, parseSpecial: Boolean): IntArray {
        val input = nativeBytes(bytes)
        val len = sizeT(bytes.size)
        val needed = Memory(SIZE_T_BYTES)
        checkStatus(EmberNative.ember_tokenize(handle, input, len, addSpecial, parseSpecial, null, SizeT(0), needed))
        while (true) {
            val n = needed.getSizeT()
            if (n == 0L) return IntArray(0)
            val out = Memory(n * 4)
            val status = EmberNative.ember_tokenize(handle, input, len, addSpecial, parseSpecial, out, SizeT(n), needed)
            if (status == EMBER_ERR_BUFFER_TOO_SMALL) continue
            checkStatus(status)
            return out.getIntArray(0, n.toInt())
        }
    }

    /**
     * The text of [tokens]. [removeSpecial] drops a leading BOS and trailing EOS the model adds
     * itself; [unparseSpecial] renders control tokens as their text. Bytes that are not UTF-8
     * (tokens cutting a character in two) become U+FFFD.
     */
    @JvmOverloads
    fun detokenize(tokens: IntArray, removeSpecial: Boolean = false, unparseSpecial: Boolean = false): String = withHandle {
        val ids = nativeInts(tokens)
        val n = sizeT(tokens.size)
        text(fetchBuffer(true) { b, c, needed -> EmberNative.ember_detokenize(handle, ids, n, removeSpecial, unparseSpecial, b, c, needed) })
    }

    /**
     * The bytes of one token. They can be part of a UTF-8 character (byte tokens): join pieces
     * before decoding them, or use [Context.generate], which streams whole characters.
     */
    @JvmOverloads
    fun tokenToPiece(token: Int, special: Boolean = false): ByteArray = withHandle {
        fetchBuffer(true) { b, c, n -> EmberNative.ember_token_to_piece(handle, token, special, b, c, n) }
    }

    /** The id of a special token, or null when the model has none of that kind. */
    fun specialToken(kind: SpecialToken): Int? = withHandle {
        val out = Memory(4)
        when (val status = EmberNative.ember_token_special(handle, kind.code, out)) {
            EMBER_OK -> out.getInt(0)
            EMBER_ERR_NOT_FOUND -> null
            else -> throw failure(status)
        }
    }

    /** Whether [token] ends generation (EOS, EOT, EOM and the like). */
    fun isEog(token: Int): Boolean = withHandle {
        val out = Memory(1)
        checkStatus(EmberNative.ember_token_is_eog(handle, token, out))
        out.getByte(0).toInt() != 0
    }

    /** A new [Context] for this model (the same as the constructor). */
    @JvmOverloads
    fun newContext(params: ContextParams = ContextParams()): Context = Context(this, params)

    /** A new [ChatSession] with this model (the same as the constructor). */
    @JvmOverloads
    fun newChat(params: ChatParams = ChatParams()): ChatSession = ChatSession(this, params)

    /** A new [Sampler] for this model's vocabulary (the same as the constructor). */
    @JvmOverloads
    fun newSampler(params: SamplerParams = SamplerParams()): Sampler = Sampler(this, params)
}

internal fun text(b: ByteArray) = String(b, Charsets.UTF_8)

private inline fun <T> notFoundAsNull(block: () -> T): T? =
    try {
        block()
    } catch (e: EmberException) {
        if (e.status == EMBER_ERR_NOT_FOUND) null else throw e
    }
