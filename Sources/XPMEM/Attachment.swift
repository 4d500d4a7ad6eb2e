import XPMEMWire
import XPMEMSystem

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

    /// Copies `destination.count` bytes of the attachment, from `offset` on, into `destination` (which
    /// must not overlap the attachment), the fastest way for the size: with non-temporal stores once
    /// source and destination together fill the last-level cache (`StreamingCopy`), so that the
    /// destination's lines are not read first only to be evicted; with memcpy below that, and above
    /// the size from which memcpy streams by itself. For one large read of an exporter's buffer this
    /// is the copy to use.
    public func copyBytes(from offset: Int = 0, into destination: UnsafeMutableRawBufferPointer) throws(XPMEMError) {
        guard offset >= 0, offset <= length, destination.count <= length - offset else {
            throw XPMEMError(.invalidArgument, "copying \(destination.count) bytes from offset \(offset) of a \(length)-byte attachment")
        }
        guard destination.count > 0 else { return }
        try withExtendedLifetime(self) { () throws(XPMEMError) in
            guard isAttached else { throw XPMEMError(.alreadyClosed, "the attachment was detached") }
            let source = UnsafeRawPointer(bytes.baseAddress! + offset)
            if StreamingCopy.pays(forCopyOf: destination.count) {
                StreamingCopy.copy(to: destination.baseAddress!, from: source, byteCount: destination.count)
            } else {
                destination.baseAddress!.copyMemory(from: source, byteCount: destination.count)
            }
        }
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
