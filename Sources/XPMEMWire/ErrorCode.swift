/// Why the broker refused a request. Sent in `failure` replies; the client library turns each into a
/// typed error.
public enum ErrorCode: UInt16, Sendable, CustomStringConvertible {
    case notFound = 1
    case permissionDenied = 2
    case invalidArgument = 3
    case protocolMismatch = 4
    case malformedFrame = 5
    case resourceExhausted = 6
    case notConnected = 7
    case internalError = 8
    case deadlineMissed = 9
    case busy = 10

    /// Decodes an untrusted code; unknown codes become `internalError`.
    public init(wireValue: UInt16) { self = ErrorCode(rawValue: wireValue) ?? .internalError }

    public var description: String {
        switch self {
        case .notFound: "not found"
        case .permissionDenied: "permission denied"
        case .invalidArgument: "invalid argument"
        case .protocolMismatch: "protocol mismatch"
        case .malformedFrame: "malformed frame"
        case .resourceExhausted: "resource exhausted"
        case .notConnected: "not connected"
        case .internalError: "internal error"
        case .deadlineMissed: "deadline missed"
        case .busy: "busy"
        }
    }
}
