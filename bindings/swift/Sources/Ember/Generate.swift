import CEmber
import Foundation

/// How to generate; the defaults are ember's (`ember_generate_params_default`).
public struct GenerateParams {
    var c = ember_generate_params()
    /// Generation stops when one of these appears in the output (which is cut before it).
    public var stop: [String] = []

    public init(maxTokens: Int? = nil) {
        _ = ember_generate_params_default(&c, MemoryLayout<ember_generate_params>.size)
        if let maxTokens { self.maxTokens = maxTokens }
    }

    /// Most tokens to generate; 0 = until end of generation or the context is full.
    public var maxTokens: Int {
        get { Int(c.max_tokens) }
        set { c.max_tokens = UInt32(clamping: newValue) }
    }

    /// Tokens at the start of the context that a context shift never drops.
    public var nKeep: Int {
        get { Int(c.n_keep) }
        set { c.n_keep = UInt32(clamping: newValue) }
    }

    /// Add BOS/EOS as the model's metadata says, when the context is empty.
    public var addSpecial: Bool {
        get { c.add_special }
        set { c.add_special = newValue }
    }

    /// Turn control-token text in the prompt into those tokens.
    public var parseSpecial: Bool {
        get { c.parse_special }
        set { c.parse_special = newValue }
    }

    /// Render control tokens in the output.
    public var renderSpecial: Bool {
        get { c.render_special }
        set { c.render_special = newValue }
    }

    /// When the context fills up, drop the older half of the conversation (after
    /// `nKeep`) instead of failing with `EmberError.contextFull`.
    public var contextShift: Bool {
        get { c.context_shift }
        set { c.context_shift = newValue }
    }
}

/// Why a generation or a reply stopped (`EMBER_STOP_*`).
public enum StopReason: UInt32, Sendable {
    /// The model produced an end-of-generation (or end-of-turn) token.
    case endOfGeneration = 1
    /// `maxTokens` tokens were generated.
    case maxTokens = 2
    /// A stop string appeared (it is not part of the text).
    case stopString = 3
    /// The piece callback returned false: the stream's consumer went away.
    case callback = 4
}

extension Context {
    /// Generates a continuation of `prompt` (appended to the conversation in the context)
    /// and streams it as pieces of whole UTF-8 characters. The work runs on a thread of
    /// its own; cancelling the task that consumes the stream (or dropping the stream)
    /// calls `ember_context_abort`, so the generation stops within one layer, and the
    /// stream simply ends. It throws an `EmberError` when the generation fails, including
    /// `.aborted` after an `abortHandle.abort()` from elsewhere. The context and sampler
    /// must not be used for anything else until the stream has ended.
    public func generate(_ prompt: String, sampler: Sampler,
                         params: GenerateParams = GenerateParams())
        -> AsyncThrowingStream<String, Error>
    {
        // The closures hold the C handles, so neither the context nor the sampler is
        // freed while the generation runs.
        let ctx = handle
        let smp = sampler.handle
        let utf8 = Array(prompt.utf8)
        return pieceStream(params: params, abort: { _ = ember_context_abort(ctx.raw) }) { gp, user in
            var result = ember_generate_result()
            result.struct_size = UInt32(MemoryLayout<ember_generate_result>.size)
            return utf8.withUnsafeBufferPointer { bytes in
                bytes.withMemoryRebound(to: CChar.self) { text in
                    code(ember_generate(ctx.raw, smp.raw, text.baseAddress, text.count, &gp,
                                        onPiece, user, &result))
                }
            }
        }
    }
}

/// The C call behind a piece stream: it is given the generation params (their stop
/// strings set) and the `user_data` for `onPiece`, and returns the call's status.
typealias PieceCall = (inout ember_generate_params, UnsafeMutableRawPointer) -> Int32

/// What `Context.generate` and `ChatSession.reply` share: `call` runs on a thread of its
/// own (8 MiB of stack) and streams its pieces into the returned stream. When the
/// consumer cancels or drops the stream, `abort` stops the C call within one layer and
/// the stream simply ends; any other failure is thrown as an `EmberError`.
func pieceStream(params: GenerateParams, abort: @escaping @Sendable () -> Void,
                 call: @escaping PieceCall) -> AsyncThrowingStream<String, Error>
{
    let job = PieceJob(params: params, call: call)
    return AsyncThrowingStream { continuation in
        continuation.onTermination = { termination in
            if case .cancelled = termination {
                abort()
            }
        }
        let thread = Thread { job.run(continuation) }
        // The default for secondary threads (512 KiB) is small for a model's decode.
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// One streaming C call and what it needs on its thread. Unchecked Sendable: it crosses
/// to that thread once, and from then on only that thread uses it; the C handles its
/// `call` holds are touched elsewhere only by an abort, which ember allows from any
/// thread.
private final class PieceJob: @unchecked Sendable {
    let params: GenerateParams
    let call: PieceCall

    init(params: GenerateParams, call: @escaping PieceCall) {
        self.params = params
        self.call = call
    }

    func run(_ continuation: AsyncThrowingStream<String, Error>.Continuation) {
        let sink = PieceSink(continuation)
        var gp = params.c
        let status: Int32 = withCStrings(params.stop) { stops in
            stops.withUnsafeBufferPointer { s in
                gp.stop = s.baseAddress
                gp.n_stop = s.count
                return call(&gp, Unmanaged.passUnretained(sink).toOpaque())
            }
        }
        // Read at once: the message belongs to this thread until its next ember call.
        let message = String(cString: ember_last_error())
        withExtendedLifetime(sink) {}
        if status == 0 || sink.consumerGone {
            continuation.finish()
        } else {
            continuation.finish(throwing: EmberError(status: status, message: message))
        }
    }
}

/// Where `onPiece` delivers the text, through ember's `user_data`.
private final class PieceSink {
    let continuation: AsyncThrowingStream<String, Error>.Continuation
    /// The consumer cancelled or dropped the stream: the generation is being stopped.
    var consumerGone = false

    init(_ continuation: AsyncThrowingStream<String, Error>.Continuation) {
        self.continuation = continuation
    }

    /// Returns false to stop the generation.
    func deliver(_ piece: String) -> Bool {
        if case .terminated = continuation.yield(piece) {
            consumerGone = true
            return false
        }
        return true
    }
}

/// The `ember_piece_fn` a `PieceCall` passes to ember with the `user_data` it is given:
/// a plain function, as a C function pointer cannot capture anything; the sink comes
/// back through `user`.
func onPiece(_ piece: UnsafePointer<CChar>?, _ len: Int, _ user: UnsafeMutableRawPointer?)
    -> Bool
{
    guard let piece, let user else { return false }
    let sink = Unmanaged<PieceSink>.fromOpaque(user).takeUnretainedValue()
    return sink.deliver(String(decoding: UnsafeRawBufferPointer(start: piece, count: len),
                               as: UTF8.self))
}

/// Calls `body` with C copies of `strings`, valid during the call.
private func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    return body(copies.map { UnsafePointer($0) })
}
