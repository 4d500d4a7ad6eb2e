import XPMEMWire

/// A mapping of (part of) another process's segment into this one (XPMEM's attached address range).
///
/// The bytes are the exporter's very pages: writes are visible to it and to other importers at
/// once. A read-only attachment faults on any write. Unmapped by `detach()`, by releasing its grant,
/// or when this object goes away; after the segment is released it stays an inaccessible reservation
/// until then.
public final class Attachment: Sendable {
    public let grant: SegmentGrant
    private let range: AttachedRange

    init(grant: SegmentGrant, range: AttachedRange) {
        self.grant = grant
        self.range = range
    }

    public var id: AttachmentID { range.id }
    /// Where in the segment this mapping starts.
    public var offset: Int { range.segmentOffset }
    public var length: Int { range.length }
    /// The policy in force for touches during an invalidation (`.block` falls back to `.revoke` where
    /// the kernel does not allow userfaultfd).
    public var policy: AccessPolicy { range.policy }
    public var isAttached: Bool { range.isMapped }

    /// The mapped bytes, valid until detached — and only while this object is alive: the optimizer may
    /// end an unused object's life early, so keep it alive (`withExtendedLifetime`) or use
    /// `withUnsafeMutableBytes`.
    public var bytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: range.base), count: range.length)
    }

    /// Runs `body` with the mapped bytes, keeping the attachment alive meanwhile.
    @discardableResult
    public func withUnsafeMutableBytes<Result>(_ body: (UnsafeMutableRawBufferPointer) throws -> Result) rethrows -> Result {
        try withExtendedLifetime(self) { try body(bytes) }
    }

    /// Unmaps exactly this attachment and tells the broker (XPMEM's `detach`). Idempotent. While the
    /// broker is gone (or before a restarted one has this attachment again) there is nobody to tell.
    public func detach() throws(XPMEMError) {
        guard range.unmap(), grant.forget(range) else { return }
        let (id, generation) = range.brokerLink
        do throws(XPMEMError) {
            let reply = try grant.broker.channel.request(.detach(id), generation: generation)
            guard case .done = reply.message else { throw BrokerChannel.unexpected(reply.message, for: .detach(id)) }
        } catch let error where error.code == .brokerUnavailable {
            _ = error  // the broker that knew this attachment is gone
        }
    }

    deinit { try? detach() }
}
