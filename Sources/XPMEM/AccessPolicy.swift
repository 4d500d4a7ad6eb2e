import XPMEMWire

/// What happens to an importer's threads that touch a range while the exporter is changing it.
public enum AccessPolicy: Sendable, CustomStringConvertible {
    /// They sleep until the invalidation ends, then carry on with whatever the memory holds then (the
    /// userspace form of a migration entry), read-only attachments as well as writable ones. Needs
    /// userfaultfd with minor-fault support for shared memory; where the kernel refuses it, attachments
    /// fall back to `.revoke`, and `Attachment.policy` says so. Accesses by the kernel on the process's
    /// behalf (`read(2)` into the range) fail with EFAULT instead of sleeping.
    case block
    /// The range becomes inaccessible: touching it raises SIGSEGV until the invalidation ends.
    case revoke

    public var description: String { self == .block ? "block" : "revoke" }
}

/// What an importer's callbacks are told about an invalidation of one of its attachments.
public struct InvalidationNotice: Sendable, Equatable {
    public var segment: SegmentID
    public var attachment: AttachmentID
    /// Odd: the segment's sequence number while this invalidation is in flight.
    public var sequence: UInt64
    public var reason: InvalidationReason
    /// The invalidated bytes within this attachment (offset from its start, and length).
    public var offset: Int
    public var length: Int
}

/// Callbacks an importer registers on an attachment, modelled on mmu notifiers. They run on a
/// thread of the library's own; `willInvalidate` may sleep as long as it needs (until the exporter's
/// deadline, after which the grant is revoked).
public struct InvalidationHandlers: Sendable {
    /// Before access is cut: tear down whatever was derived from the mapping.
    public var willInvalidate: (@Sendable (InvalidationNotice) -> Void)?
    /// After access is restored: rebuild.
    public var didInvalidate: (@Sendable (InvalidationNotice) -> Void)?
    /// The segment is gone (removed, exporter exited, or this importer missed a deadline); the
    /// mapping is now an inaccessible reservation until detached.
    public var released: (@Sendable (SegmentID, ReleaseReason) -> Void)?
    /// The connection to the broker ended (the broker died, or this connection was closed) while
    /// invalidations of this attachment were in flight, so their `end` will never come. Called instead
    /// of `didInvalidate`, after access is given back (sleepers woken, the segment's pages mapped
    /// again, holding whatever the exporter had written: its change may be half done). The mapping
    /// stays usable; no invalidation reaches it until the library has reconnected to a new broker and
    /// registered it again (`XPMEMBroker.setConnectionEventHandler` tells when).
    public var brokerLost: (@Sendable (BrokerLossNotice) -> Void)?

    public init(
        willInvalidate: (@Sendable (InvalidationNotice) -> Void)? = nil,
        didInvalidate: (@Sendable (InvalidationNotice) -> Void)? = nil,
        released: (@Sendable (SegmentID, ReleaseReason) -> Void)? = nil,
        brokerLost: (@Sendable (BrokerLossNotice) -> Void)? = nil
    ) {
        self.willInvalidate = willInvalidate
        self.didInvalidate = didInvalidate
        self.released = released
        self.brokerLost = brokerLost
    }
}
