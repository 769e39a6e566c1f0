package dev.ember

import com.sun.jna.ptr.PointerByReference
import dev.ember.jna.EmberNative
import dev.ember.jna.ember_chat
import dev.ember.jna.ember_chat_info
import dev.ember.jna.ember_chat_result
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.Flow

/**
 * A conversation with a model through its chat template: messages, rendered with the
 * model's own Jinja template (or [ChatParams.template]), and a context of its own whose KV
 * cache is kept from turn to turn, so each [reply] processes only the text added since the
 * last one ([ChatResult.promptProcessed]). When the conversation no longer fits the context,
 * the oldest turns are dropped, the system prompt kept ([ChatResult.droppedMessages]).
 *
 * Not thread-safe, like a [Context]: one thread (or coroutine) at a time; a second thread gets
 * EMBER_ERR_BUSY. [close] is safe at any time, from any thread: a reply running elsewhere is
 * aborted (it fails with EMBER_ERR_ABORTED) and the session is freed when it returns.
 */
class ChatSession private constructor(
    /** The model this session talks to. */
    val model: Model,
    internal val handle: ember_chat,
) : NativeObject("ChatSession") {
    /**
     * A session with [model]. A template that does not compile throws [EmberException]
     * EMBER_ERR_TEMPLATE (with the template's message and line). It holds a use of the model,
     * so the model may be closed first.
     */
    @JvmOverloads
    constructor(model: Model, params: ChatParams = ChatParams()) : this(model, newHandle(model, params)) {
        val system = params.systemPrompt ?: return
        try {
            addMessage("system", system)
        } catch (t: Throwable) {
            close()
            throw t
        }
    }

    private companion object {
        fun newHandle(model: Model, params: ChatParams): ember_chat {
            model.acquire()
            try {
                val keep = ArrayList<Any>()
                val out = PointerByReference()
                keepAlive(keep) {
                    checkStatus(EmberNative.ember_chat_new(model.handle, params.context.toNative(), params.toNative(keep), out))
                }
                return ember_chat(out.value) // the model's use is now this session's
            } catch (t: Throwable) {
                model.release()
                throw t
            }
        }
    }

    override fun free() {
        EmberNative.ember_chat_free(handle)
        model.release()
    }

    // Stops a reply running on another thread; a request made while nothing runs is dropped.
    override fun onClose() {
        EmberNative.ember_chat_abort(handle)
    }

    /**
     * What the last [reply] (or [replyBlocking]) did: tokens reused from the cache and
     * processed, messages dropped, timings. Null before the first reply, while one runs, and
     * after one that failed or was aborted; a reply whose collector stopped it has
     * [StopReason.CALLBACK], or no result when the abort reached ember first.
     */
    @Volatile
    var lastResult: ChatResult? = null
        private set

    /** Appends a message: [role] "system", "user", "assistant", "tool"..., [content] its text. */
    fun addMessage(role: String, content: String) = withHandle {
        val bytes = content.toByteArray(Charsets.UTF_8)
        checkStatus(EmberNative.ember_chat_add_message(handle, cString(role), nativeBytes(bytes), sizeT(bytes.size)))
    }

    /**
     * Appends a message given as a JSON object with a string "role", for what a role and a text
     * cannot say: content as a list of parts, an assistant's `tool_calls`, a tool result's
     * `tool_call_id`. The template sees every field.
     */
    fun addMessageJson(json: String) = withHandle {
        val bytes = json.toByteArray(Charsets.UTF_8)
        checkStatus(EmberNative.ember_chat_add_message_json(handle, nativeBytes(bytes), sizeT(bytes.size)))
    }

    /**
     * Generates the assistant's reply to the conversation and streams it in whole UTF-8 pieces;
     * the reply is appended to the messages. Only the tokens after what the cache already holds
     * are processed. It ends at the template's end-of-turn token, [GenerateParams.maxTokens] or a
     * stop string ([GenerateParams.renderSpecial] applies too; `addSpecial`, `parseSpecial`,
     * `contextShift` and `nKeep` do not: the session manages its context). The flow behaves as
     * [Context.generate]'s: cold, run on [Dispatchers.IO] at most one piece ahead, aborted when
     * the collector stops, completing once ember has returned; the text streamed until then is
     * kept as the reply. [lastResult] has the stats once the flow completes. [sampler]: null
     * makes one from [GenerateParams.sampler] for this reply.
     */
    @JvmOverloads
    fun reply(params: GenerateParams = GenerateParams(), sampler: Sampler? = null): Flow<String> =
        pieceFlow(::abort) { onPiece -> replyBlocking(params, sampler, onPiece) }

    /**
     * [reply] on the calling thread, handing each piece to [onPiece], which returns false to
     * stop ([StopReason.CALLBACK]). An exception from [onPiece] stops the reply and is rethrown.
     */
    @JvmOverloads
    fun replyBlocking(
        params: GenerateParams = GenerateParams(),
        sampler: Sampler? = null,
        onPiece: (String) -> Boolean,
    ): ChatResult = withHandle {
        lastResult = null
        withSampler(model, params.sampler, sampler) { s ->
            val keep = ArrayList<Any>()
            keepAlive(keep) {
                val native = params.toNative(keep)
                val result = ember_chat_result()
                result.struct_size = result.size()
                val callback = PieceCallback(onPiece)
                val status = EmberNative.ember_chat_generate(handle, s, native, callback.native, null, result)
                callback.rethrow()
                checkStatus(status)
                ChatResult(result).also { lastResult = it }
            }
        }
    }

    /**
     * The conversation rendered by the template, ending with the header of an assistant turn
     * when [addGenerationPrompt]: the exact prompt the next reply is generated from.
     */
    @JvmOverloads
    fun render(addGenerationPrompt: Boolean = true): String = withHandle {
        text(fetchBuffer(true) { b, c, n -> EmberNative.ember_chat_render(handle, addGenerationPrompt, b, c, n) })
    }

    /** Message [index] (0 = the first) as a JSON object, e.g. `{"content":"...","role":"assistant"}`. */
    fun messageJson(index: Int): String = withHandle {
        require(index >= 0) { "message index $index" }
        text(fetchBuffer(true) { b, c, n -> EmberNative.ember_chat_message_json(handle, sizeT(index), b, c, n) })
    }

    /** The template's origin, the messages so far and how full the context is. */
    val info: ChatInfo
        get() = withHandle {
            val i = ember_chat_info()
            i.struct_size = i.size()
            checkStatus(EmberNative.ember_chat_get_info(handle, i))
            ChatInfo(i)
        }

    /** Starts a new conversation with the same system messages; the cache keeps the system prompt. */
    fun reset() = withHandle { checkStatus(EmberNative.ember_chat_reset(handle)) }

    /** Asks the reply running on this session to stop (from any thread): it fails with EMBER_ERR_ABORTED. */
    fun abort() = withHandle { checkStatus(EmberNative.ember_chat_abort(handle)) }
}
