import CEmber

/// A sampling chain with its own random state and token history. Not Sendable (one
/// thread or task at a time, like a `Context`); it can be reused across contexts.
public final class Sampler {
    /// How to sample; the defaults are llama.cpp's, from `ember_sampler_params_default`
    /// (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no penalties).
    public struct Params {
        var c = ember_sampler_params()
        /// Added to a token's logit before sampling; `-Float.infinity` bans the token.
        public var logitBias: [Token: Float] = [:]

        public init() {
            _ = ember_sampler_params_default(&c, MemoryLayout<ember_sampler_params>.size)
        }

        /// Always the most likely token (after biases and penalties).
        public static var greedy: Params {
            var p = Params()
            p.temperature = 0
            return p
        }

        /// 0 or less: greedy.
        public var temperature: Float {
            get { c.temperature }
            set { c.temperature = newValue }
        }

        /// Keep the k most likely tokens (0 = off).
        public var topK: Int {
            get { Int(c.top_k) }
            set { c.top_k = UInt32(clamping: newValue) }
        }

        public var topP: Float {
            get { c.top_p }
            set { c.top_p = newValue }
        }

        public var minP: Float {
            get { c.min_p }
            set { c.min_p = newValue }
        }

        public var repeatPenalty: Float {
            get { c.repeat_penalty }
            set { c.repeat_penalty = newValue }
        }

        public var frequencyPenalty: Float {
            get { c.frequency_penalty }
            set { c.frequency_penalty = newValue }
        }

        public var presencePenalty: Float {
            get { c.presence_penalty }
            set { c.presence_penalty = newValue }
        }

        /// How many recent tokens the penalties look at.
        public var penaltyLastN: Int {
            get { Int(c.penalty_last_n) }
            set { c.penalty_last_n = UInt32(clamping: newValue) }
        }

        /// The same seed and inputs give the same tokens.
        public var seed: UInt64 {
            get { c.seed }
            set { c.seed = newValue }
        }
    }

    let handle: OwnedHandle
    var raw: OpaquePointer { handle.raw }

    public init(model: Model, params: Params = Params()) throws {
        var c = params.c
        let bias = params.logitBias.map { ember_logit_bias(token: $0.key, bias: $0.value) }
        var out: OpaquePointer?
        // ember copies the biases during the call.
        try bias.withUnsafeBufferPointer { b in
            c.logit_bias = b.baseAddress
            c.n_logit_bias = b.count
            try check(ember_sampler_new(model.raw, &c, &out))
        }
        guard let out else { throw EmberError.panic("ember_sampler_new returned no sampler") }
        handle = OwnedHandle(out, free: { ember_sampler_free($0) })
    }

    /// Chooses the next token from the context's last logits. It is not recorded: call
    /// `accept` with the token you keep, so that the penalties see it.
    public func sample(_ context: Context) throws -> Token {
        var token: Token = 0
        try check(ember_sampler_sample(raw, context.raw, &token))
        return token
    }

    public func accept(_ token: Token) throws { try check(ember_sampler_accept(raw, token)) }

    /// Forgets the accepted tokens and reseeds: the sampler behaves as new.
    public func reset() throws { try check(ember_sampler_reset(raw)) }
}
