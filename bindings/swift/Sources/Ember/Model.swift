import CEmber

/// A token id: an index into the model's vocabulary, `0 ..< info.nVocab`.
public typealias Token = UInt32

/// A C handle and the function that frees it. Contexts and samplers share theirs with
/// the generations running on them, so the handle lives until the last user is done.
final class OwnedHandle: @unchecked Sendable {
    let raw: OpaquePointer
    private let free: (OpaquePointer) -> Void

    init(_ raw: OpaquePointer, free: @escaping (OpaquePointer) -> Void) {
        self.raw = raw
        self.free = free
    }

    deinit { free(raw) }
}

/// A loaded GGUF model: weights (memory-mapped from the file), configuration and
/// tokenizer. A model is immutable, and every C function that takes it is thread-safe,
/// so one model can be shared by any number of contexts on any number of threads.
/// (Sendable is declared unchecked because the compiler cannot see into the C handle.)
public final class Model: @unchecked Sendable {
    /// How to load a model; the defaults are ember's (`ember_model_params_default`).
    public struct Params {
        var c = ember_model_params()

        public init() {
            _ = ember_model_params_default(&c, MemoryLayout<ember_model_params>.size)
        }

        /// Map the file instead of reading it (default true: loading is nearly instant).
        public var useMmap: Bool {
            get { c.use_mmap }
            set { c.use_mmap = newValue }
        }

        /// Lock the model's pages in RAM, best effort (default false).
        public var useMlock: Bool {
            get { c.use_mlock }
            set { c.use_mlock = newValue }
        }
    }

    /// What a model is: its shape and size.
    public struct Info: Sendable, Equatable {
        public let nVocab: Int
        public let nCtxTrain: Int
        public let nEmbd: Int
        public let nLayer: Int
        public let nHead: Int
        public let nHeadKv: Int
        public let nFf: Int
        public let nParams: UInt64
        public let sizeBytes: UInt64
    }

    let raw: OpaquePointer

    /// Loads the GGUF file at `path`.
    public init(path: String, params: Params = Params()) throws {
        var c = params.c
        var out: OpaquePointer?
        try check(ember_model_load(path, &c, &out))
        guard let out else { throw EmberError.panic("ember_model_load returned no model") }
        raw = out
    }

    /// Loads `length` bytes of the open file `fd` from `offset` (0 = to the end): a model
    /// inside an app bundle or an archive. ember duplicates `fd`; the caller keeps it.
    public init(fileDescriptor fd: Int32, offset: UInt64 = 0, length: UInt64 = 0,
                params: Params = Params()) throws {
        var c = params.c
        var out: OpaquePointer?
        try check(ember_model_load_fd(fd, offset, length, &c, &out))
        guard let out else { throw EmberError.panic("ember_model_load_fd returned no model") }
        raw = out
    }

    deinit { ember_model_free(raw) }

    public var info: Info {
        get throws {
            var i = ember_model_info()
            i.struct_size = UInt32(MemoryLayout<ember_model_info>.size)
            try check(ember_model_get_info(raw, &i))
            return Info(nVocab: Int(i.n_vocab), nCtxTrain: Int(i.n_ctx_train),
                        nEmbd: Int(i.n_embd), nLayer: Int(i.n_layer), nHead: Int(i.n_head),
                        nHeadKv: Int(i.n_head_kv), nFf: Int(i.n_ff), nParams: i.n_params,
                        sizeBytes: i.size_bytes)
        }
    }

    /// `general.architecture`, e.g. "llama".
    public func architecture() throws -> String {
        try fetchText { code(ember_model_architecture(raw, $0, $1, $2)) } ?? ""
    }

    /// A metadata value rendered as text (numbers in decimal, arrays as "[a, b, ...]"),
    /// or nil when the file has no such key.
    public func metadata(_ key: String) throws -> String? {
        try fetchText { code(ember_model_meta(raw, key, $0, $1, $2)) }
    }

    /// The Jinja chat template stored in the model, or nil.
    public func chatTemplate() throws -> String? {
        try fetchText { code(ember_model_chat_template(raw, $0, $1, $2)) }
    }

    /// The token ids of `text`. `addSpecial` adds BOS/EOS as the model's metadata asks;
    /// `parseSpecial` turns control-token text (e.g. "<|im_start|>") into those tokens.
    public func tokenize(_ text: String, addSpecial: Bool = true, parseSpecial: Bool = false)
        throws -> [Token]
    {
        let utf8 = Array(text.utf8)
        return try utf8.withUnsafeBufferPointer { bytes in
            try bytes.withMemoryRebound(to: CChar.self) { chars in
                var needed = 0
                try check(ember_tokenize(raw, chars.baseAddress, chars.count, addSpecial,
                                         parseSpecial, nil, 0, &needed))
                var tokens = [Token](repeating: 0, count: needed)
                try tokens.withUnsafeMutableBufferPointer { out in
                    try check(ember_tokenize(raw, chars.baseAddress, chars.count, addSpecial,
                                             parseSpecial, out.baseAddress, out.count, &needed))
                }
                return tokens
            }
        }
    }

    /// The text of `tokens`. Bytes that do not form UTF-8 (tokens that cut a character
    /// in two) become U+FFFD.
    public func detokenize(_ tokens: [Token], removeSpecial: Bool = false,
                           unparseSpecial: Bool = false) throws -> String
    {
        try tokens.withUnsafeBufferPointer { t in
            try fetchText {
                code(ember_detokenize(raw, t.baseAddress, t.count, removeSpecial, unparseSpecial,
                                      $0, $1, $2))
            } ?? ""
        }
    }

    /// The text of one token (control tokens render as "" unless `special`).
    public func piece(_ token: Token, special: Bool = false) throws -> String {
        try fetchText { code(ember_token_to_piece(raw, token, special, $0, $1, $2)) } ?? ""
    }

    /// Whether `token` ends a generation (EOS, EOT and the like).
    public func isEndOfGeneration(_ token: Token) throws -> Bool {
        var eog = false
        try check(ember_token_is_eog(raw, token, &eog))
        return eog
    }
}
