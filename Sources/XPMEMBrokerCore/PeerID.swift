/// One accepted connection, as the core knows it. The daemon numbers connections as it accepts
/// them; a client (`ClientID`) exists only once its peer has said hello.
public struct PeerID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static func < (left: PeerID, right: PeerID) -> Bool { left.rawValue < right.rawValue }

    public var description: String { "connection \(rawValue)" }
}

/// Which of a peer's sockets a frame travels on.
public enum PeerChannel: Equatable, Sendable {
    /// Requests and their replies.
    case main
    /// Invalidation events to the client and its acknowledgements.
    case events
}
