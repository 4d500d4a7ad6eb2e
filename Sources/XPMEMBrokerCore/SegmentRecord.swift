import XPMEMWire

/// An exported segment as the registry knows it. The memfd itself is kept by the daemon.
///
/// A value whose fields live out of line, copied on write: the registry keeps a record per segment
/// in a dictionary, whose buckets number up to twice the records just after it grows, and every
/// bucket is as large as what it holds. Holding the whole record there cost a node of 100,000
/// segments about 460 bytes per segment in buckets alone; a reference costs 8 per bucket, and the
/// fields are allocated once per segment.
@dynamicMemberLookup
public struct SegmentRecord: Equatable, Sendable {
    public struct Fields: Equatable, Sendable {
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
        /// For a window of the owner's address-space file: where the window starts in the file (which
        /// is the owner's virtual address). Nil for an ordinary segment, whose file is the segment.
        public var addressSpaceBase: UInt64? = nil
        /// For a window: the address-space file it is a window of, whose descriptors the daemon keeps
        /// once for all of the owner's windows of it. Nil for an ordinary segment, or when the file was
        /// not told.
        public var file: FileIdentity? = nil
        /// The pages the owner hinted free that nobody has written since.
        public var freePages = FreePageHints()
    }

    /// Only ever mutated while uniquely referenced (the `_modify` accessor copies it first otherwise),
    /// so sharing it between copies of the record, and threads, is safe.
    private final class Storage: @unchecked Sendable {
        var fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    private var storage: Storage

    public init(
        id: SegmentID, owner: ClientID, ownerCredentials: Credentials, size: UInt64, permit: Permit, name: String,
        pageSize: UInt64 = 4096, addressSpaceBase: UInt64? = nil, file: FileIdentity? = nil
    ) {
        storage = Storage(Fields(id: id, owner: owner, ownerCredentials: ownerCredentials, size: size, permit: permit,
                                 name: name, pageSize: pageSize, addressSpaceBase: addressSpaceBase, file: file))
    }

    public subscript<Value>(dynamicMember field: WritableKeyPath<Fields, Value>) -> Value {
        get { storage.fields[keyPath: field] }
        _modify {
            if !isKnownUniquelyReferenced(&storage) { storage = Storage(storage.fields) }
            yield &storage.fields[keyPath: field]
        }
    }

    public static func == (left: SegmentRecord, right: SegmentRecord) -> Bool {
        left.storage === right.storage || left.storage.fields == right.storage.fields
    }
}
