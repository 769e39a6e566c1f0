package dev.ember

import com.sun.jna.Memory
import com.sun.jna.Native
import dev.ember.jna.EMBER_KV_F16
import dev.ember.jna.EMBER_KV_F32
import dev.ember.jna.EMBER_KV_Q8_0
import dev.ember.jna.EMBER_SPECIAL_BOS
import dev.ember.jna.EMBER_SPECIAL_EOM
import dev.ember.jna.EMBER_SPECIAL_EOS
import dev.ember.jna.EMBER_SPECIAL_EOT
import dev.ember.jna.EMBER_SPECIAL_FIM_MID
import dev.ember.jna.EMBER_SPECIAL_FIM_PRE
import dev.ember.jna.EMBER_SPECIAL_FIM_SUF
import dev.ember.jna.EMBER_SPECIAL_MASK
import dev.ember.jna.EMBER_SPECIAL_PAD
import dev.ember.jna.EMBER_SPECIAL_SEP
import dev.ember.jna.EMBER_SPECIAL_UNK
import dev.ember.jna.EMBER_STOP_CALLBACK
import dev.ember.jna.EMBER_STOP_END_OF_GENERATION
import dev.ember.jna.EMBER_STOP_MAX_TOKENS
import dev.ember.jna.EMBER_STOP_STRING
import dev.ember.jna.EMBER_TEMPLATE_BUILTIN
import dev.ember.jna.EMBER_TEMPLATE_GIVEN
import dev.ember.jna.EMBER_TEMPLATE_MODEL
import dev.ember.jna.EmberNative
import dev.ember.jna.ember_chat_info
import dev.ember.jna.ember_chat_params
import dev.ember.jna.ember_chat_result
import dev.ember.jna.ember_context_info
import dev.ember.jna.ember_context_params
import dev.ember.jna.ember_generate_params
import dev.ember.jna.ember_generate_result
import dev.ember.jna.ember_logit_bias
import dev.ember.jna.ember_model_info
import dev.ember.jna.ember_model_params
import dev.ember.jna.ember_progress_fn
import dev.ember.jna.ember_sampler_params

// Every default below is ember's own (the ember_*_params_default functions), read once, so the
// bindings never disagree with the library about them.

private fun Byte.bool() = toInt() != 0

private fun Boolean.byte(): Byte = if (this) 1 else 0

internal fun nativeModelParams() =
    ember_model_params().also { checkStatus(EmberNative.ember_model_params_default(it, sizeT(it.size()))) }

internal fun nativeContextParams() =
    ember_context_params().also { checkStatus(EmberNative.ember_context_params_default(it, sizeT(it.size()))) }

internal fun nativeSamplerParams() =
    ember_sampler_params().also { checkStatus(EmberNative.ember_sampler_params_default(it, sizeT(it.size()))) }

internal fun nativeGenerateParams() =
    ember_generate_params().also { checkStatus(EmberNative.ember_generate_params_default(it, sizeT(it.size()))) }

internal fun nativeChatParams() =
    ember_chat_params().also { checkStatus(EmberNative.ember_chat_params_default(it, sizeT(it.size()))) }

private object Defaults {
    val model by lazy { nativeModelParams() }
    val context by lazy { nativeContextParams() }
    val sampler by lazy { nativeSamplerParams() }
    val generate by lazy { nativeGenerateParams() }
    val chat by lazy { nativeChatParams() }
}

/** How to load a model. */
data class ModelParams @JvmOverloads constructor(
    /** Map the file instead of reading it (nearly instant, pages shared with the OS cache). */
    val useMmap: Boolean = Defaults.model.use_mmap.bool(),
    /** Lock the model's pages in RAM, best effort. */
    val useMlock: Boolean = Defaults.model.use_mlock.bool(),
    /**
     * Called on the loading thread with the fraction done, in [0, 1]; return false to cancel
     * (the load then fails with EMBER_ERR_CANCELLED). An exception it throws cancels the load
     * and is rethrown by it.
     */
    val progress: ((Float) -> Boolean)? = null,
) {
    internal fun toNative(failure: Array<Throwable?>): ember_model_params = nativeModelParams().also { p ->
        p.use_mmap = useMmap.byte()
        p.use_mlock = useMlock.byte()
        val f = progress
        if (f != null) {
            p.progress = ember_progress_fn { fraction, _ ->
                try {
                    f(fraction)
                } catch (t: Throwable) {
                    failure[0] = t
                    false
                }
            }
        }
    }
}

/** Element type of the KV cache. */
enum class KvType(val code: Int) {
    F16(EMBER_KV_F16),
    F32(EMBER_KV_F32),

    /** 8-bit blocks (llama.cpp's q8_0 cache): 53% of F16's memory; heads must be multiples of 32. */
    Q8_0(EMBER_KV_Q8_0),
    ;

    companion object {
        internal fun of(code: Int) = entries.firstOrNull { it.code == code } ?: F16
    }
}

/** How to make a context. */
data class ContextParams @JvmOverloads constructor(
    /** Positions the KV cache holds; 0 = the trained context (at most 4096). */
    val nCtx: Int = Defaults.context.n_ctx,
    /** Most tokens per forward pass; longer inputs are split. */
    val nBatch: Int = Defaults.context.n_batch,
    /** Worker threads; 0 = one per core. */
    val nThreads: Int = Defaults.context.n_threads,
    val kvType: KvType = KvType.of(Defaults.context.kv_type),
    /** Keep logits for every token of a batch ([Context.decodeAll]), not just the last. */
    val logitsAll: Boolean = Defaults.context.logits_all.bool(),
) {
    internal fun toNative(): ember_context_params = nativeContextParams().also { p ->
        p.n_ctx = nCtx
        p.n_batch = nBatch
        p.n_threads = nThreads
        p.kv_type = kvType.code
        p.logits_all = logitsAll.byte()
    }
}

/** How to sample (ember's defaults are llama.cpp's: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05). */
data class SamplerParams @JvmOverloads constructor(
    /** 0 or less: greedy. */
    val temperature: Float = Defaults.sampler.temperature,
    val topK: Int = Defaults.sampler.top_k,
    val topP: Float = Defaults.sampler.top_p,
    val minP: Float = Defaults.sampler.min_p,
    val repeatPenalty: Float = Defaults.sampler.repeat_penalty,
    val frequencyPenalty: Float = Defaults.sampler.frequency_penalty,
    val presencePenalty: Float = Defaults.sampler.presence_penalty,
    /** How many recent tokens the penalties look at. */
    val penaltyLastN: Int = Defaults.sampler.penalty_last_n,
    /** The same seed and inputs give the same tokens. */
    val seed: Long = Defaults.sampler.seed,
    /** Added to a token's logit before sampling; Float.NEGATIVE_INFINITY bans it. */
    val logitBias: Map<Int, Float> = emptyMap(),
) {
    /** The native struct; its logit_bias array lives in [keep] until the call is over. */
    internal fun toNative(keep: MutableList<Any>): ember_sampler_params = nativeSamplerParams().also { p ->
        p.temperature = temperature
        p.top_k = topK
        p.top_p = topP
        p.min_p = minP
        p.repeat_penalty = repeatPenalty
        p.frequency_penalty = frequencyPenalty
        p.presence_penalty = presencePenalty
        p.penalty_last_n = penaltyLastN
        p.seed = seed
        if (logitBias.isNotEmpty()) {
            @Suppress("UNCHECKED_CAST")
            val biases = ember_logit_bias().toArray(logitBias.size) as Array<ember_logit_bias>
            for ((b, e) in biases.zip(logitBias.entries)) {
                b.token = e.key
                b.bias = e.value
                b.write()
            }
            keep.add(biases)
            p.logit_bias = biases[0].pointer
            p.n_logit_bias = sizeT(biases.size)
        }
    }
}

/** How to generate. */
data class GenerateParams @JvmOverloads constructor(
    /** Most tokens to generate; 0 = until end of generation or a full context. */
    val maxTokens: Int = Defaults.generate.max_tokens,
    /** Tokens at the start never dropped by a context shift. */
    val nKeep: Int = Defaults.generate.n_keep,
    /** Add BOS/EOS as the model's metadata says, when the context is empty. */
    val addSpecial: Boolean = Defaults.generate.add_special.bool(),
    /** Turn special-token text in the prompt ("<|im_start|>") into those tokens. */
    val parseSpecial: Boolean = Defaults.generate.parse_special.bool(),
    /** Render special tokens in the output. */
    val renderSpecial: Boolean = Defaults.generate.render_special.bool(),
    /** When the context fills up, drop the older half after the first [nKeep] tokens instead of failing. */
    val contextShift: Boolean = Defaults.generate.context_shift.bool(),
    /** Generation stops when one of these appears; the text is cut before it. */
    val stop: List<String> = emptyList(),
    /** The sampler [Context.generate] makes when it is not given one. */
    val sampler: SamplerParams = SamplerParams(),
) {
    internal fun toNative(keep: MutableList<Any>): ember_generate_params = nativeGenerateParams().also { p ->
        p.max_tokens = maxTokens
        p.n_keep = nKeep
        p.add_special = addSpecial.byte()
        p.parse_special = parseSpecial.byte()
        p.render_special = renderSpecial.byte()
        p.context_shift = contextShift.byte()
        if (stop.isNotEmpty()) {
            val strings = stop.map { cString(it) }
            val array = Memory(Native.POINTER_SIZE.toLong() * strings.size)
            strings.forEachIndexed { i, s -> array.setPointer(i.toLong() * Native.POINTER_SIZE, s) }
            keep.addAll(strings)
            keep.add(array)
            p.stop = array
            p.n_stop = sizeT(strings.size)
        }
    }
}

/** Why a generation stopped. */
enum class StopReason(val code: Int) {
    /** The model produced an end-of-generation token. */
    END_OF_GENERATION(EMBER_STOP_END_OF_GENERATION),

    /** [GenerateParams.maxTokens] tokens were generated. */
    MAX_TOKENS(EMBER_STOP_MAX_TOKENS),

    /** A stop string appeared. */
    STOP_STRING(EMBER_STOP_STRING),

    /** The piece callback returned false (or the Flow's collector stopped). */
    CALLBACK(EMBER_STOP_CALLBACK),

    /** A reason this version of the bindings does not know. */
    UNKNOWN(-1),
    ;

    companion object {
        internal fun of(code: Int) = entries.firstOrNull { it.code == code } ?: UNKNOWN
    }
}

/** What a generation did. */
data class GenerateResult(
    val stopReason: StopReason,
    val promptTokens: Int,
    val generatedTokens: Int,
    val promptMs: Double,
    val generateMs: Double,
) {
    internal constructor(r: ember_generate_result) :
        this(StopReason.of(r.stop_reason), r.prompt_tokens, r.generated_tokens, r.prompt_ms, r.generate_ms)
}

/** How to make a [ChatSession]. */
data class ChatParams @JvmOverloads constructor(
    /** The conversation's first message, as role "system"; null for none (the template may add its own). */
    val systemPrompt: String? = null,
    /** A Jinja chat template to use instead of the model's; null: the model's own, or a built-in for its architecture. */
    val template: String? = null,
    /** The session's context: [ContextParams.nCtx] bounds the conversation (older turns are dropped beyond it). */
    val context: ContextParams = ContextParams(),
    /** Tools the template describes to the model: a JSON array of tool schemas, or null. */
    val toolsJson: String? = null,
    /** More template variables, a JSON object (`{"enable_thinking": false}`), or null. */
    val templateVarsJson: String? = null,
    /** Unix seconds (UTC) the template's `strftime_now()` sees; null: the clock. */
    val now: Long? = if (Defaults.chat.pin_now.bool()) Defaults.chat.now_unix else null,
) {
    /** The native struct; the strings it points to live in [keep] until the call is over. */
    internal fun toNative(keep: MutableList<Any>): ember_chat_params = nativeChatParams().also { p ->
        fun kept(s: String?) = s?.let { cString(it).also(keep::add) }
        p.chat_template = kept(template)
        p.tools_json = kept(toolsJson)
        p.template_vars_json = kept(templateVarsJson)
        p.pin_now = (now != null).byte()
        p.now_unix = now ?: 0L
    }
}

/** What one [ChatSession] reply did. */
data class ChatResult(
    val stopReason: StopReason,
    /** Tokens of the whole rendered conversation. */
    val promptTokens: Int,
    /** Of those, tokens already in the cache from earlier turns (not processed again). */
    val promptReused: Int,
    /** Tokens processed for this reply: [promptTokens] - [promptReused]. */
    val promptProcessed: Int,
    /** Tokens of the reply (not counting the end-of-turn token). */
    val generatedTokens: Int,
    /** Messages dropped from the start of the conversation (after the system messages) to make it fit. */
    val droppedMessages: Int,
    val promptMs: Double,
    val generateMs: Double,
) {
    internal constructor(r: ember_chat_result) : this(
        StopReason.of(r.stop_reason), r.prompt_tokens, r.prompt_reused, r.prompt_processed,
        r.generated_tokens, r.dropped_messages, r.prompt_ms, r.generate_ms,
    )
}

/** Where a [ChatSession]'s template came from. */
enum class TemplateOrigin(val code: Int) {
    /** The model file's own (`tokenizer.chat_template`). */
    MODEL(EMBER_TEMPLATE_MODEL),

    /** [ChatParams.template]. */
    GIVEN(EMBER_TEMPLATE_GIVEN),

    /** The file has none: a built-in one for its architecture ([ChatInfo.builtinTemplate] names it). */
    BUILTIN(EMBER_TEMPLATE_BUILTIN),

    /** An origin this version of the bindings does not know. */
    UNKNOWN(-1),
    ;

    companion object {
        internal fun of(code: Int) = entries.firstOrNull { it.code == code } ?: UNKNOWN
    }
}

/** A [ChatSession]'s state. */
data class ChatInfo(
    val templateOrigin: TemplateOrigin,
    /** "chatml", "gemma", "llama3" when [templateOrigin] is [TemplateOrigin.BUILTIN], else null. */
    val builtinTemplate: String?,
    /** Messages in the conversation (the system prompt and replies included). */
    val nMessages: Int,
    /** Positions of the context filled. */
    val nPast: Int,
    /** Positions the context holds. */
    val nCtx: Int,
) {
    internal constructor(i: ember_chat_info) : this(
        TemplateOrigin.of(i.template_origin), i.builtin_template?.getString(0, "UTF-8"), i.n_messages, i.n_past, i.n_ctx,
    )
}

/** What a model is: its shape and size. */
data class ModelInfo(
    val nVocab: Int,
    val nCtxTrain: Int,
    val nEmbd: Int,
    val nLayer: Int,
    val nHead: Int,
    val nHeadKv: Int,
    val nFf: Int,
    val nParams: Long,
    val sizeBytes: Long,
) {
    internal constructor(i: ember_model_info) :
        this(i.n_vocab, i.n_ctx_train, i.n_embd, i.n_layer, i.n_head, i.n_head_kv, i.n_ff, i.n_params, i.size_bytes)
}

/** A context's settings in effect (zeros replaced by what was chosen) and its memory. */
data class ContextInfo(
    val nCtx: Int,
    val nBatch: Int,
    val nThreads: Int,
    val kvType: KvType,
    val nVocab: Int,
    val nPast: Int,
    val logitsAll: Boolean,
    val sizeBytes: Long,
) {
    internal constructor(i: ember_context_info) :
        this(i.n_ctx, i.n_batch, i.n_threads, KvType.of(i.kv_type), i.n_vocab, i.n_past, i.logits_all.bool(), i.size_bytes)
}

/** Special tokens a model may have ([Model.specialToken]). */
enum class SpecialToken(val code: Int) {
    BOS(EMBER_SPECIAL_BOS),
    EOS(EMBER_SPECIAL_EOS),
    EOT(EMBER_SPECIAL_EOT),
    EOM(EMBER_SPECIAL_EOM),
    UNK(EMBER_SPECIAL_UNK),
    SEP(EMBER_SPECIAL_SEP),
    PAD(EMBER_SPECIAL_PAD),
    MASK(EMBER_SPECIAL_MASK),
    FIM_PRE(EMBER_SPECIAL_FIM_PRE),
    FIM_SUF(EMBER_SPECIAL_FIM_SUF),
    FIM_MID(EMBER_SPECIAL_FIM_MID),
}
