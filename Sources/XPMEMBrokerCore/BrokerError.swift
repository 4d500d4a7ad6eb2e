import XPMEMWire

/// A refusal the broker sends back as a `failure` reply: a code the client library maps to a typed
/// error, and words a user can act on.
public struct BrokerError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String

    public init(_ code: ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
