import XPMEMWire

/// An exported segment as the registry knows it. The memfd itself is kept by the daemon.
public struct SegmentRecord: Equatable, Sendable {
    public var id: SegmentID
    public var owner: ClientID
    public var ownerCredentials: Credentials
    public var size: UInt64
    public var permit: Permit
    public var name: String
    /// Where the owner says the pages are meant to be; shown by `xpmemctl segments`.
    public var placement = "first-touch"
    /// What pages back it, as the owner says (`describePages`); shown by `xpmemctl segments`.
    public var pages = "4 KiB"
    /// The size of its file's pages, as the broker saw from the file itself: the base page size, or
    /// a huge page size for a hugetlb memfd. Attaches and invalidations must be aligned to it.
    public var pageSize: UInt64 = 4096
    /// For a window of the owner's address-space file: where the window starts in the file (which is
    /// the owner's virtual address). Nil for an ordinary segment, whose file is the segment.
    public var addressSpaceBase: UInt64? = nil
    /// For a window: the address-space file it is a window of, whose descriptors the daemon keeps once
    /// for all of the owner's windows of it. Nil for an ordinary segment, or when the file was not told.
    public var file: FileIdentity? = nil
    /// The pages the owner hinted free that nobody has written since.
    public var freePages = FreePageHints()
}

/// A right to attach one segment, held by one client (XPMEM's apid).
public struct GrantRecord: Equatable, Sendable {
    public var handle: AccessHandle
    public var client: ClientID
    public var segment: SegmentID
    public var access: AccessMode
}

/// One mapping a client made of part of a segment.
public struct AttachmentRecord: Equatable, Sendable {
    public var id: AttachmentID
    public var client: ClientID
    public var handle: AccessHandle
    public var segment: SegmentID
    public var offset: UInt64
    public var length: UInt64
    public var access: AccessMode

    /// Whether this mapping covers any byte of `offset..<offset+length`.
    public func overlaps(offset other: UInt64, length otherLength: UInt64) -> Bool {
        byteRangesOverlap(offset, length, other, otherLength)
    }
}

/// Whether `start..<start+length` and `otherStart..<otherStart+otherLength` share a byte: the one
/// range test of attachments, invalidations and their windows.
func byteRangesOverlap(_ start: UInt64, _ length: UInt64, _ otherStart: UInt64, _ otherLength: UInt64) -> Bool {
    start < otherStart &+ otherLength && otherStart < start &+ length
}

/// A connected client and what it holds.
public struct ClientRecord: Equatable, Sendable {
    public var id: ClientID
    public var credentials: Credentials
    public var name: String
    /// The NUMA node of the CPU the client ran on when it connected, nil if unknown.
    public var node: Int? = nil
    public var segments: Set<SegmentID> = []
    public var grants: Set<AccessHandle> = []
    public var attachments: Set<AttachmentID> = []
    /// What the client's attachment cache last reported, for `xpmemctl clients`; nil until it does.
    public var attachCache: AttachCacheCounters? = nil
}

/// Caps that keep one client from exhausting the broker's memory.
public struct RegistryLimits: Sendable {
    public var segmentsPerClient = 4096
    public var grantsPerClient = 16384
    public var attachmentsPerClient = 65536
    /// 1 TiB: larger than any node's memory, small enough that offsets never overflow.
    public var maximumSegmentSize: UInt64 = 1 << 40
    public var pageSize: UInt64 = 4096

    public init() {}
}
