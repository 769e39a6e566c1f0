package dev.ember

import com.sun.jna.Memory
import com.sun.jna.ptr.PointerByReference
import dev.ember.jna.EmberNative
import dev.ember.jna.ember_sampler

/**
 * A sampling chain (bias, penalties, top-k, top-p, min-p, temperature, seeded draw) with its own
 * random state and token history. Not thread-safe: one thread at a time (another thread gets
 * EMBER_ERR_BUSY). It does not belong to a context: reuse it across contexts and conversations.
 */
class Sampler private constructor(internal val handle: ember_sampler) : NativeObject("Sampler") {
    /** A sampler for [model]'s vocabulary (the model need not outlive it). */
    @JvmOverloads
    constructor(model: Model, params: SamplerParams = SamplerParams()) : this(newHandle(model, params, false))

    internal companion object {
        /** `evenIfModelClosed`: a Context holds a use of its model, so it may make samplers after Model.close. */
        fun newHandle(model: Model, params: SamplerParams, evenIfModelClosed: Boolean): ember_sampler {
            model.acquire(evenIfModelClosed)
            try {
                val keep = ArrayList<Any>()
                val out = PointerByReference()
                keepAlive(keep) { checkStatus(EmberNative.ember_sampler_new(model.handle, params.toNative(keep), out)) }
                return ember_sampler(out.value)
            } finally {
                model.release()
            }
        }
    }

    override fun free() = EmberNative.ember_sampler_free(handle)

    /** Chooses the next token from [context]'s last logits. Does not record it: call [accept]. */
    fun sample(context: Context): Int = withHandle {
        context.withHandle {
            val out = Memory(4)
            checkStatus(EmberNative.ember_sampler_sample(handle, context.handle, out))
            out.getInt(0)
        }
    }

    /** Chooses a token from [logits] (n_vocab of them, e.g. a row of [Context.logits]). */
    fun sample(logits: FloatArray): Int = withHandle {
        val input = Memory(maxOf(1, logits.size) * 4L)
        input.write(0, logits, 0, logits.size)
        val out = Memory(4)
        checkStatus(EmberNative.ember_sampler_sample_logits(handle, input, sizeT(logits.size), out))
        out.getInt(0)
    }

    /** Records [token] as part of the text, for the repetition penalties. */
    fun accept(token: Int) = withHandle { checkStatus(EmberNative.ember_sampler_accept(handle, token)) }

    /** Forgets the accepted tokens and reseeds: the sampler behaves as new. */
    fun reset() = withHandle { checkStatus(EmberNative.ember_sampler_reset(handle)) }
}

/** Runs [block], keeping the objects in [keep] (native memory [block] points to) reachable until it returns. */
internal inline fun <R> keepAlive(keep: MutableList<Any>, block: () -> R): R {
    try {
        return block()
    } finally {
        keep.clear()
    }
}
