/// One segment as `xpmemctl segments` shows it.
public struct SegmentSummary: Equatable, Sendable, Codable {
    public var id: String
    public var ownerPID: Int32
    public var ownerUID: UInt32
    public var size: UInt64
    public var mode: String
    public var name: String
    public var importers: UInt32
    public var attachments: UInt32
    /// Where the owner placed the pages ("first-touch", "node 1", "interleave 0,1"...).
    public var placement: String
    /// The NUMA node where most of the segment's attached bytes are used, -1 if none is attached.
    public var importerNode: Int32
    /// What pages back it, as its owner last said ("4 KiB", "THP 254 of 256 MiB").
    public var pages: String

    public init(id: SegmentID, ownerPID: Int32, ownerUID: UInt32, size: UInt64, permit: Permit, name: String,
                importers: UInt32, attachments: UInt32, placement: String = "first-touch", importerNode: Int32 = -1,
                pages: String = "4 KiB") {
        self.id = id.description
        self.ownerPID = ownerPID
        self.ownerUID = ownerUID
        self.size = size
        self.mode = permit.description
        self.name = name
        self.importers = importers
        self.attachments = attachments
        self.placement = placement
        self.importerNode = importerNode
        self.pages = pages
    }
}

/// One connected client as `xpmemctl clients` shows it.
public struct ClientSummary: Equatable, Sendable, Codable {
    public var id: UInt64
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    public var name: String
    public var segments: UInt32
    public var grants: UInt32
    public var attachments: UInt32
    /// The NUMA node of the CPU the client ran on when it connected, -1 if unknown.
    public var node: Int32
    /// What its attachment cache last reported (`reportAttachCache`), nil when it never did.
    public var attachCache: AttachCacheCounters?

    public init(id: UInt64, pid: Int32, uid: UInt32, gid: UInt32, name: String, segments: UInt32, grants: UInt32,
                attachments: UInt32, node: Int32 = -1, attachCache: AttachCacheCounters? = nil) {
        self.id = id
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.name = name
        self.segments = segments
        self.grants = grants
        self.attachments = attachments
        self.node = node
        self.attachCache = attachCache
    }
}

/// The broker's overall state, as `xpmemctl status` shows it.
public struct BrokerStatus: Equatable, Sendable, Codable {
    public var protocolVersion: UInt16
    public var pid: Int32
    public var uptimeMilliseconds: UInt64
    public var clients: UInt32
    public var segments: UInt32
    public var grants: UInt32
    public var attachments: UInt32
    public var openDescriptors: UInt32
    public var numaNodes: UInt32

    public init(protocolVersion: UInt16, pid: Int32, uptimeMilliseconds: UInt64, clients: UInt32, segments: UInt32,
                grants: UInt32, attachments: UInt32, openDescriptors: UInt32, numaNodes: UInt32) {
        self.protocolVersion = protocolVersion
        self.pid = pid
        self.uptimeMilliseconds = uptimeMilliseconds
        self.clients = clients
        self.segments = segments
        self.grants = grants
        self.attachments = attachments
        self.openDescriptors = openDescriptors
        self.numaNodes = numaNodes
    }
}
