import CEmber

/// One conversation with a model: its KV cache, scratch buffers, worker threads and
/// logits, all allocated up front, so decoding allocates nothing.
///
/// Not Sendable: a context belongs to one thread (or task) at a time, as in C, where a
/// second concurrent user is refused with `EmberError.busy`. Give each task its own
/// context; they can share one `Model`. The one thing any thread may do is stop the
/// running work, through `abortHandle`.
public final class Context {
    public enum KVType: UInt32, Sendable {
        /// 16-bit floats (the default, as in llama.cpp).
        case f16 = 0
        /// 32-bit floats (twice the memory).
        case f32 = 1
        /// 8-bit blocks (llama.cpp's q8_0 cache): 53% of f16's memory; the model's head
        /// sizes must be multiples of 32.
        case q8_0 = 2
    }

    /// How to make a context; the defaults are ember's (`ember_context_params_default`).
    public struct Params {
        var c = ember_context_params()

        public init() {
            _ = ember_context_params_default(&c, MemoryLayout<ember_context_params>.size)
        }

        /// Positions the KV cache holds; 0 = the trained context, at most 4096.
        public var nCtx: Int {
            get { Int(c.n_ctx) }
            set { c.n_ctx = UInt32(clamping: newValue) }
        }

        /// Most tokens per forward pass (default 512).
        public var nBatch: Int {
            get { Int(c.n_batch) }
            set { c.n_batch = UInt32(clamping: newValue) }
        }

        /// Worker threads; 0 = one per core.
        public var nThreads: Int {
            get { Int(c.n_threads) }
            set { c.n_threads = UInt32(clamping: newValue) }
        }

        public var kvType: KVType {
            get { KVType(rawValue: c.kv_type) ?? .f16 }
            set { c.kv_type = newValue.rawValue }
        }

        /// Keep the logits of every token of a batch, not only the last.
        public var logitsAll: Bool {
            get { c.logits_all }
            set { c.logits_all = newValue }
        }
    }

    /// Stops the decode or generation running on a context, from any thread.
    public struct AbortHandle: Sendable {
        let context: OwnedHandle

        public func abort() { _ = ember_context_abort(context.raw) }
    }

    public let model: Model
    let handle: OwnedHandle
    var raw: OpaquePointer { handle.raw }

    public init(model: Model, params: Params = Params()) throws {
        var c = params.c
        var out: OpaquePointer?
        try check(ember_context_new(model.raw, &c, &out))
        guard let out else { throw EmberError.panic("ember_context_new returned no context") }
        self.model = model
        handle = OwnedHandle(out, free: { ember_context_free($0) })
    }

    public var abortHandle: AbortHandle { AbortHandle(context: handle) }

    /// The number of positions filled.
    public func nPast() throws -> Int {
        var n: UInt32 = 0
        try check(ember_context_n_past(raw, &n))
        return Int(n)
    }

    /// Forgets every position: the next decode starts a new conversation.
    public func reset() throws { try check(ember_context_reset(raw)) }

    /// Keeps only the first `nPast` positions (e.g. to retry a reply).
    public func truncate(to nPast: Int) throws {
        try check(ember_context_truncate(raw, UInt32(clamping: nPast)))
    }

    /// Appends `tokens` and runs the model over them; on error the context is unchanged.
    public func decode(_ tokens: [Token]) throws {
        try tokens.withUnsafeBufferPointer { try check(ember_decode(raw, $0.baseAddress, $0.count)) }
    }

    /// The next-token logits after the last decoded token (a copy, `nVocab` floats).
    public func logits() throws -> [Float] {
        var ptr: UnsafePointer<Float>?
        var n = 0
        try check(ember_context_logits(raw, &ptr, &n))
        return Array(UnsafeBufferPointer(start: ptr, count: n))
    }

    /// The context's state (tokens, KV cache, last logits), to restore with `loadState`.
    public func saveState() throws -> [UInt8] {
        var size = 0
        try check(ember_state_size(raw, &size))
        var state = [UInt8](repeating: 0, count: size)
        var needed = 0
        try state.withUnsafeMutableBufferPointer {
            try check(ember_state_save(raw, $0.baseAddress, $0.count, &needed))
        }
        return Array(state.prefix(needed))
    }

    /// Replaces the context's contents with a saved state; a corrupt, truncated or
    /// foreign state throws `EmberError.invalidState` and leaves the context unchanged.
    public func loadState(_ state: [UInt8]) throws {
        try state.withUnsafeBufferPointer { try check(ember_state_load(raw, $0.baseAddress, $0.count)) }
    }

    public func saveState(toFile path: String) throws {
        try check(ember_state_save_file(raw, path))
    }

    public func loadState(fromFile path: String) throws {
        try check(ember_state_load_file(raw, path))
    }
}
