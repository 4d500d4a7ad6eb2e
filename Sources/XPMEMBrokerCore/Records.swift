import XPMEMWire

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
    /// Whom this client's address-space file may have reached, for its windows' permissions.
    public var addressSpaceReach = AddressSpaceFileReach()
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
