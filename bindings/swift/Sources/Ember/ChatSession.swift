import CEmber
import Foundation

/// A conversation with a model through its chat template: messages, rendered with the
/// model's own Jinja template (or `Params.template`), and a context of its own whose KV
/// cache is kept from turn to turn, so each `reply` processes only the text added since
/// the last one (`ReplyStats.promptProcessed`). When the conversation no longer fits the
/// context, the oldest turns are dropped and the system prompt kept
/// (`ReplyStats.droppedMessages`).
///
/// Not Sendable, like a `Context`: one thread or task at a time (ember refuses a second
/// concurrent user with `EmberError.busy`). Any thread may stop a running reply through
/// `abortHandle`.
public final class ChatSession {
    /// How to make a session; the defaults are ember's (`ember_chat_params_default`).
    public struct Params {
        var c = ember_chat_params()
        /// The conversation's first message, as role "system"; nil for none (the
        /// template may then write its own).
        public var systemPrompt: String?
        /// A Jinja chat template to use instead of the model's; nil: the model's own,
        /// or a built-in one for its architecture when the file has none.
        public var template: String?
        /// Tools the template describes to the model: a JSON array of tool schemas.
        public var toolsJSON: String?
        /// More template variables, as a JSON object (`{"enable_thinking": false}`).
        public var templateVariablesJSON: String?
        /// The session's context; `context.nCtx` bounds the conversation.
        public var context = Context.Params()

        public init(systemPrompt: String? = nil) {
            _ = ember_chat_params_default(&c, MemoryLayout<ember_chat_params>.size)
            self.systemPrompt = systemPrompt
        }

        /// The Unix time (seconds, UTC) the template's `strftime_now()` sees; nil: the
        /// clock.
        public var now: Int64? {
            get { c.pin_now ? c.now_unix : nil }
            set {
                c.pin_now = newValue != nil
                c.now_unix = newValue ?? 0
            }
        }
    }

    /// What one reply did.
    public struct ReplyStats: Sendable, Equatable {
        /// nil for a reason this version of the Swift layer does not know.
        public let stopReason: StopReason?
        /// Tokens of the whole rendered conversation.
        public let promptTokens: Int
        /// Of those, tokens already in the cache from earlier turns (not processed again).
        public let promptReused: Int
        /// Tokens processed for this reply: `promptTokens - promptReused`.
        public let promptProcessed: Int
        /// Tokens of the reply (not counting the end-of-turn token).
        public let generatedTokens: Int
        /// Messages dropped from the start of the conversation (after the system
        /// messages) to make it fit the context.
        public let droppedMessages: Int
        public let promptMilliseconds: Double
        public let generateMilliseconds: Double

        init(_ r: ember_chat_result) {
            stopReason = StopReason(rawValue: r.stop_reason)
            promptTokens = Int(r.prompt_tokens)
            promptReused = Int(r.prompt_reused)
            promptProcessed = Int(r.prompt_processed)
            generatedTokens = Int(r.generated_tokens)
            droppedMessages = Int(r.dropped_messages)
            promptMilliseconds = r.prompt_ms
            generateMilliseconds = r.generate_ms
        }
    }

    /// Where the template came from (`EMBER_TEMPLATE_*`).
    public enum TemplateOrigin: Sendable, Equatable {
        /// The model file's own (`tokenizer.chat_template`).
        case model
        /// `Params.template`.
        case given
        /// The file has none: a built-in one for its architecture ("chatml", "gemma",
        /// "llama3").
        case builtin(String)
        /// An origin this version of the Swift layer does not know.
        case other(UInt32)
    }

    /// A session's state.
    public struct Info: Sendable, Equatable {
        public let templateOrigin: TemplateOrigin
        /// Messages in the conversation (the system prompt and the replies included).
        public let messageCount: Int
        /// Positions of the context filled.
        public let nPast: Int
        /// Positions the context holds.
        public let nCtx: Int
    }

    /// Stops the reply running on a session, from any thread.
    public struct AbortHandle: Sendable {
        let chat: OwnedHandle

        public func abort() { _ = ember_chat_abort(chat.raw) }
    }

    public let model: Model
    let handle: OwnedHandle
    var raw: OpaquePointer { handle.raw }
    private let stats = StatsBox()

    /// A session with `model`. A template that does not compile throws
    /// `EmberError.template` with the template's message and line.
    public init(model: Model, params: Params = Params()) throws {
        var cp = params.context.c
        var c = params.c
        var out: OpaquePointer?
        // ember copies the strings during the call.
        try withOptionalCString(params.template) { template in
            try withOptionalCString(params.toolsJSON) { tools in
                try withOptionalCString(params.templateVariablesJSON) { vars in
                    c.chat_template = template
                    c.tools_json = tools
                    c.template_vars_json = vars
                    try check(ember_chat_new(model.raw, &cp, &c, &out))
                }
            }
        }
        guard let out else { throw EmberError.panic("ember_chat_new returned no session") }
        self.model = model
        handle = OwnedHandle(out, free: { ember_chat_free($0) })
        if let systemPrompt = params.systemPrompt {
            try addMessage(role: "system", content: systemPrompt)
        }
    }

    public var abortHandle: AbortHandle { AbortHandle(chat: handle) }

    /// What the last reply did, once its stream has ended; nil before the first reply,
    /// while one runs, and after one that failed or was aborted.
    public var lastReply: ReplyStats? { stats.value }

    /// Appends a message: `role` "system", "user", "assistant", "tool"..., and its text.
    public func addMessage(role: String, content: String) throws {
        let utf8 = Array(content.utf8)
        try utf8.withUnsafeBufferPointer { bytes in
            try bytes.withMemoryRebound(to: CChar.self) { text in
                try check(ember_chat_add_message(raw, role, text.baseAddress, text.count))
            }
        }
    }

    /// Appends a message given as a JSON object with a string "role", for what a role
    /// and a text cannot say: content as a list of parts, an assistant's `tool_calls`,
    /// a tool result's `tool_call_id`. The template sees every field.
    public func addMessage(json: String) throws {
        let utf8 = Array(json.utf8)
        try utf8.withUnsafeBufferPointer { bytes in
            try bytes.withMemoryRebound(to: CChar.self) { text in
                try check(ember_chat_add_message_json(raw, text.baseAddress, text.count))
            }
        }
    }

    /// Generates the assistant's reply to the conversation and streams it as pieces of
    /// whole UTF-8 characters; the reply is appended to the messages. Only the tokens
    /// after what the cache already holds are processed. The reply ends at the
    /// template's end-of-turn token, `params.maxTokens` or a stop string
    /// (`renderSpecial` applies too; `addSpecial`, `parseSpecial`, `contextShift` and
    /// `nKeep` do not: the session manages its context). The stream behaves as
    /// `Context.generate`'s: the work runs on a thread of its own, cancelling the
    /// consuming task (or dropping the stream) calls `ember_chat_abort` and the stream
    /// simply ends, the text streamed until then kept as the reply; it throws an
    /// `EmberError` when the reply fails (`.template` when the template does, `.aborted`
    /// after an `abortHandle.abort()` from elsewhere). `lastReply` has the stats once
    /// the stream has ended. Use neither the session nor the sampler for anything else
    /// until then.
    public func reply(sampler: Sampler, params: GenerateParams = GenerateParams())
        -> AsyncThrowingStream<String, Error>
    {
        // The closures hold the C handles, so neither the session nor the sampler is
        // freed while the reply runs.
        let chat = handle
        let smp = sampler.handle
        let box = stats
        box.value = nil
        return pieceStream(params: params, abort: { _ = ember_chat_abort(chat.raw) }) { gp, user in
            var result = ember_chat_result()
            result.struct_size = UInt32(MemoryLayout<ember_chat_result>.size)
            let status = code(ember_chat_generate(chat.raw, smp.raw, &gp, onPiece, user, &result))
            if status == 0 {
                box.value = ReplyStats(result)
            }
            return status
        }
    }

    /// The conversation rendered by the template, ending with the header of an
    /// assistant turn when `addGenerationPrompt`: the exact prompt of the next reply.
    public func render(addGenerationPrompt: Bool = true) throws -> String {
        try fetchText { code(ember_chat_render(raw, addGenerationPrompt, $0, $1, $2)) } ?? ""
    }

    /// Message `index` (0 = the first) as a JSON object, e.g.
    /// `{"content":"...","role":"assistant"}`.
    public func messageJSON(at index: Int) throws -> String {
        try fetchText { code(ember_chat_message_json(raw, index, $0, $1, $2)) } ?? ""
    }

    public var info: Info {
        get throws {
            var i = ember_chat_info()
            i.struct_size = UInt32(MemoryLayout<ember_chat_info>.size)
            try check(ember_chat_get_info(raw, &i))
            let origin: TemplateOrigin
            // EMBER_TEMPLATE_MODEL, _GIVEN, _BUILTIN (fixed by the ABI).
            switch i.template_origin {
            case 0: origin = .model
            case 1: origin = .given
            case 2: origin = .builtin(i.builtin_template.map { String(cString: $0) } ?? "")
            default: origin = .other(i.template_origin)
            }
            return Info(templateOrigin: origin, messageCount: Int(i.n_messages),
                        nPast: Int(i.n_past), nCtx: Int(i.n_ctx))
        }
    }

    /// Starts a new conversation with the same system messages; the cache keeps the
    /// system prompt for the next reply.
    public func reset() throws { try check(ember_chat_reset(raw)) }
}

/// A reply's stats, written by its thread before the stream ends and read after.
private final class StatsBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stats: ChatSession.ReplyStats?

    var value: ChatSession.ReplyStats? {
        get {
            lock.lock()
            defer { lock.unlock() }
            return stats
        }
        set {
            lock.lock()
            defer { lock.unlock() }
            stats = newValue
        }
    }
}

/// Calls `body` with a C copy of `s` (NULL for nil), valid during the call.
private func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) throws -> R)
    rethrows -> R
{
    guard let s else { return try body(nil) }
    return try s.withCString { try body($0) }
}
