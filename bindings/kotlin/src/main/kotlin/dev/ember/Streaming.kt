package dev.ember

import dev.ember.jna.EMBER_ERR_ABORTED
import dev.ember.jna.EmberNative
import dev.ember.jna.ember_piece_fn
import dev.ember.jna.ember_sampler
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.trySendBlocking
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.launch
import java.util.concurrent.atomic.AtomicBoolean

// What Context.generate and ChatSession.reply share: a blocking native call that streams
// pieces to a callback, turned into a Flow that aborts the call when its collector stops.

/**
 * A cold flow of the pieces [generate] hands to its callback. [generate] runs on
 * [Dispatchers.IO] at most one piece ahead of the collector (its callback returns false once
 * the collector is gone). When the collector stops (cancellation, `take(n)`, an exception),
 * [abort] stops a decode in progress, the EMBER_ERR_ABORTED that causes is not an error, and
 * the flow completes only once [generate] has returned, so the handle is free again.
 */
internal fun pieceFlow(abort: () -> Unit, generate: (onPiece: (String) -> Boolean) -> Unit): Flow<String> = flow {
    // Rendezvous: the native call blocks in the callback until the collector takes a piece.
    val pieces = Channel<String>(Channel.RENDEZVOUS)
    val stoppedByCollector = AtomicBoolean(false)
    coroutineScope {
        launch(Dispatchers.IO) {
            try {
                generate { piece -> pieces.trySendBlocking(piece).isSuccess }
                pieces.close()
            } catch (e: EmberException) {
                pieces.close(if (e.status == EMBER_ERR_ABORTED && stoppedByCollector.get()) null else e)
            } catch (t: Throwable) {
                pieces.close(t)
            }
        }
        var completed = false
        try {
            for (piece in pieces) emit(piece)
            completed = true
        } finally {
            if (!completed) {
                // The collector stopped (or the generation failed): wake a callback blocked
                // in send (it then returns false) and stop a decode in progress.
                stoppedByCollector.set(true)
                pieces.cancel()
                try {
                    abort()
                } catch (_: IllegalStateException) {
                    // closed meanwhile: close() aborted it already
                }
            }
        }
    }
}

/**
 * The native piece callback for a call that streams to [onPiece]. Callbacks must not throw
 * into ember: an exception from [onPiece] is kept, stops the call (the callback returns false)
 * and is rethrown by [rethrow] once the call has returned.
 */
internal class PieceCallback(private val onPiece: (String) -> Boolean) {
    private var failure: Throwable? = null

    val native = ember_piece_fn { piece, len, _ ->
        try {
            onPiece(String(piece!!.getByteArray(0, len.toInt()), Charsets.UTF_8))
        } catch (t: Throwable) {
            failure = t
            false
        }
    }

    fun rethrow() {
        failure?.let { throw it }
    }
}

/**
 * Runs [block] with the handle of [sampler], held for the call, or with a sampler made from
 * [params] for this call alone. The caller holds a use of [model] (a Context or ChatSession
 * does), so this works after the user closed the model.
 */
internal inline fun <R> withSampler(model: Model, params: SamplerParams, sampler: Sampler?, block: (ember_sampler) -> R): R {
    if (sampler != null) return sampler.withHandle { block(sampler.handle) }
    val own = Sampler.newHandle(model, params, evenIfModelClosed = true)
    try {
        return block(own)
    } finally {
        EmberNative.ember_sampler_free(own)
    }
}
