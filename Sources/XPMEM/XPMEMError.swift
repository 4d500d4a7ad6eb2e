import SystemPackage
import XPMEMWire

/// An error from the XPMEM client library: a code to match on, a message a user can act on, and the
/// underlying errno when a system call failed.
public struct XPMEMError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What kind of failure this is. New codes may be added; match the ones you handle.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let rawValue: String
        public var description: String { rawValue }

        /// The segment, handle or attachment does not exist (or no longer does).
        public static let notFound = Code(rawValue: "not found")
        /// The segment's mode bits do not let this user have the access asked for.
        public static let permissionDenied = Code(rawValue: "permission denied")
        /// An argument is out of range, unaligned, or otherwise unacceptable.
        public static let invalidArgument = Code(rawValue: "invalid argument")
        /// No broker answers at the socket path.
        public static let brokerUnavailable = Code(rawValue: "broker unavailable")
        /// The broker speaks another protocol version.
        public static let protocolMismatch = Code(rawValue: "protocol mismatch")
        /// The broker sent something this library cannot understand, or refused a frame as malformed.
        public static let protocolError = Code(rawValue: "protocol error")
        /// A limit of the broker or the system was reached.
        public static let resourceExhausted = Code(rawValue: "resource exhausted")
        /// The object was already detached, released or removed.
        public static let alreadyClosed = Code(rawValue: "already closed")
        /// A system call failed; see `errno`.
        public static let systemCallFailed = Code(rawValue: "system call failed")
        /// The broker hit an internal problem.
        public static let brokerInternal = Code(rawValue: "broker internal error")
    }

    public var code: Code
    public var message: String
    public var errno: Errno?

    public init(_ code: Code, _ message: String, errno: Errno? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public var description: String { "\(code): \(message)" }

    package static func system(_ what: String, _ errno: Errno) -> XPMEMError {
        XPMEMError(.systemCallFailed, "\(what) failed: \(errno)", errno: errno)
    }

    /// Maps a broker refusal to the library's codes.
    static func fromBroker(_ code: ErrorCode, _ message: String) -> XPMEMError {
        switch code {
        case .notFound: XPMEMError(.notFound, message)
        case .permissionDenied: XPMEMError(.permissionDenied, message)
        case .invalidArgument: XPMEMError(.invalidArgument, message)
        case .protocolMismatch: XPMEMError(.protocolMismatch, message)
        case .malformedFrame, .notConnected: XPMEMError(.protocolError, message)
        case .resourceExhausted: XPMEMError(.resourceExhausted, message)
        case .internalError, .deadlineMissed, .busy: XPMEMError(.brokerInternal, message)
        }
    }
}
