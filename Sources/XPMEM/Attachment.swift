import XPMEMWire

/// A mapping of (part of) another process's segment into this one (XPMEM's attached address range).
///
/// The bytes are the exporter's very pages: writes are visible to it and to other importers at
/// once. A read-only attachment faults on any write. Unmapped by `detach()`, by releasing its grant,
/// or when this object goes away.
public final class Attachment: Sendable {
    public let grant: SegmentGrant
    public let id: AttachmentID
    /// Where in the segment this mapping starts.
    public let offset: Int
    private let range: AttachedRange

    init(grant: SegmentGrant, id: AttachmentID, offset: Int, range: AttachedRange) {
        self.grant = grant
        self.id = id
        self.offset = offset
        self.range = range
    }

    /// The mapped bytes, valid until detached.
    public var bytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: range.base), count: range.length)
    }

    public var length: Int { range.length }
    public var isAttached: Bool { range.isMapped }

    /// Unmaps exactly this attachment and tells the broker (XPMEM's `detach`). Idempotent.
    public func detach() throws(XPMEMError) {
        guard range.unmap() else { return }
        if grant.forget(id) { try grant.broker.channel.requestDone(.detach(id)) }
    }

    deinit { try? detach() }
}
