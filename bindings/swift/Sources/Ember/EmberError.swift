import CEmber

/// An error from ember: which `EMBER_ERR_*` status a call returned, and the message
/// `ember_last_error()` gave for it on the calling thread.
public enum EmberError: Error, Equatable, CustomStringConvertible {
    case nullArgument(String)
    case invalidArgument(String)
    case io(String)
    case malformedModel(String)
    case unsupported(String)
    case invalidToken(String)
    case invalidUTF8(String)
    case contextFull(String)
    case bufferTooSmall(String)
    case aborted(String)
    case invalidState(String)
    case cancelled(String)
    case notFound(String)
    case busy(String)
    case template(String)
    case panic(String)
    /// A status this version of the Swift layer does not know (a newer library).
    case other(status: Int32, message: String)

    /// Builds the error for `status` (the numbers are fixed by ember's ABI: never
    /// renumbered, never reused).
    public init(status: Int32, message: String) {
        switch status {
        case 1: self = .nullArgument(message)
        case 2: self = .invalidArgument(message)
        case 3: self = .io(message)
        case 4: self = .malformedModel(message)
        case 5: self = .unsupported(message)
        case 6: self = .invalidToken(message)
        case 7: self = .invalidUTF8(message)
        case 8: self = .contextFull(message)
        case 9: self = .bufferTooSmall(message)
        case 10: self = .aborted(message)
        case 11: self = .invalidState(message)
        case 12: self = .cancelled(message)
        case 13: self = .notFound(message)
        case 14: self = .busy(message)
        case 15: self = .template(message)
        case 16: self = .panic(message)
        default: self = .other(status: status, message: message)
        }
    }

    /// The C status code (`EMBER_ERR_*`).
    public var status: Int32 {
        switch self {
        case .nullArgument: return 1
        case .invalidArgument: return 2
        case .io: return 3
        case .malformedModel: return 4
        case .unsupported: return 5
        case .invalidToken: return 6
        case .invalidUTF8: return 7
        case .contextFull: return 8
        case .bufferTooSmall: return 9
        case .aborted: return 10
        case .invalidState: return 11
        case .cancelled: return 12
        case .notFound: return 13
        case .busy: return 14
        case .template: return 15
        case .panic: return 16
        case .other(let status, _): return status
        }
    }

    /// What ember said was wrong.
    public var message: String {
        switch self {
        case .nullArgument(let m), .invalidArgument(let m), .io(let m), .malformedModel(let m),
            .unsupported(let m), .invalidToken(let m), .invalidUTF8(let m), .contextFull(let m),
            .bufferTooSmall(let m), .aborted(let m), .invalidState(let m), .cancelled(let m),
            .notFound(let m), .busy(let m), .template(let m), .panic(let m):
            return m
        case .other(_, let m):
            return m
        }
    }

    /// The status's C name, e.g. "EMBER_ERR_MALFORMED_MODEL".
    public var statusName: String {
        String(cString: ember_status_name(status))
    }

    public var description: String { "\(statusName): \(message)" }
}

// `ember_status` is two things in C before C23: `typedef int32_t ember_status` (what the
// functions return) and an enum tag of the same name (what the EMBER_* constants have).
// Rather than depend on which of them Swift's importer lets a name resolve to, statuses
// are turned into Int32 here, by whichever overload matches the type a call returns.

@inline(__always)
func code(_ status: Int32) -> Int32 { status }

@inline(__always)
func code<S: RawRepresentable>(_ status: S) -> Int32 where S.RawValue: BinaryInteger {
    Int32(truncatingIfNeeded: status.rawValue)
}

/// Throws the `EmberError` for a failed call; the message is read at once, on the thread
/// that made the call (ember keeps it per thread, until that thread's next call).
@inline(__always)
func check(_ status: Int32) throws {
    if status != 0 {
        throw EmberError(status: status, message: String(cString: ember_last_error()))
    }
}

@inline(__always)
func check<S: RawRepresentable>(_ status: S) throws where S.RawValue: BinaryInteger {
    try check(code(status))
}

/// `EMBER_ERR_NOT_FOUND`, which some lookups turn into `nil`.
let statusNotFound: Int32 = 13

/// Text through ember's (buf, capacity, needed) convention: a size query with no buffer,
/// then the call with a buffer of `needed` bytes (the text and its NUL). `nil` when the
/// call says EMBER_ERR_NOT_FOUND.
func fetchText(
    _ call: (UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>) -> Int32
) throws -> String? {
    var needed = 0
    let first = call(nil, 0, &needed)
    if first == statusNotFound { return nil }
    try check(first)
    // A model's text never changes, so the size from the query is the size of the text.
    var buf = [CChar](repeating: 0, count: max(needed, 1))
    try check(buf.withUnsafeMutableBufferPointer { call($0.baseAddress, $0.count, &needed) })
    return buf.withUnsafeBufferPointer { p in
        p.withMemoryRebound(to: UInt8.self) { bytes in
            String(decoding: bytes.prefix(max(needed - 1, 0)), as: UTF8.self)
        }
    }
}
