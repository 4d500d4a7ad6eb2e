import XPMEMWire

/// An attach request parked until an invalidation of its range ends, like a fault waiting on a
/// migration entry.
struct DeferredAttach: Equatable, Sendable {
    var peer: PeerID
    var client: ClientID
    var requestID: UInt32
    var handle: AccessHandle
    var offset: UInt64
    var length: UInt64
}
