import XPMEMWire

/// What an importer's `brokerLost` callback is told: the connection to the broker ended while
/// invalidations of this attachment were in flight.
public struct BrokerLossNotice: Sendable, Equatable {
    public var segment: SegmentID
    public var attachment: AttachmentID
    /// The invalidations that were in flight, as `willInvalidate` was told them, by sequence. Their
    /// ranges are accessible again.
    public var interrupted: [InvalidationNotice]
}
