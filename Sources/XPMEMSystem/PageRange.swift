@preconcurrency import Glibc
import SystemPackage

/// A page-aligned range of this process's memory whose pages are queried and moved between NUMA nodes
/// together (a segment, an attachment). It borrows the range: its owner keeps it mapped meanwhile.
public struct PageRange: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let length: Int
    public let pageSize: Int

    public init(base: UnsafeMutableRawPointer, length: Int, pageSize: Int) {
        self.base = base
        self.length = length
        self.pageSize = pageSize
    }

    public var pageCount: Int { (length + pageSize - 1) / pageSize }

    /// Maps this process's page-table entries for the pages of `offsets` (relative to `base`) that
    /// exist, without allocating any (`MADV_POPULATE_READ` of a shared mapping's data): after it, a
    /// query or a move sees every page the file has there. Linux 5.14 and later.
    public func mapExistingPages(_ offsets: Range<Int>) throws(Errno) {
        guard !offsets.isEmpty else { return }
        _ = try valueOrErrno { madvise(base + offsets.lowerBound, offsets.count, 22 /* MADV_POPULATE_READ */) }
    }

    /// Allocates every page of the range now and maps it here, as writes would
    /// (`MADV_POPULATE_WRITE`): a page that cannot be had is an error now instead of a signal at a
    /// later touch. Linux 5.14 and later.
    public func allocateEveryPage() throws(Errno) {
        _ = try valueOrErrno { madvise(base, length, 23 /* MADV_POPULATE_WRITE */) }
    }

    /// The node of every page (see `NUMA.pageNodes`).
    public func nodes(populate: Bool) throws(Errno) -> [Int32] {
        try NUMA.pageNodes(address: base, length: length, pageSize: pageSize, populate: populate)
    }

    /// Makes `node` the range's policy and moves its existing pages there, strictly: true when every
    /// page now follows the policy, false when some could not move (the kernel's `EIO`; a query says
    /// which). The corresponding C function is `mbind` with `MPOL_MF_STRICT`.
    public func bind(to node: Int, moving move: NUMA.Move) throws(Errno) -> Bool {
        do {
            try NUMA.setPolicy(.bind([node]), address: base, length: length, move: move, strict: true)
            return true
        } catch .ioError {
            return false
        }
    }

    /// Moves the pages at these indexes (0 is the first page of the range) to `node`; one status per
    /// page, in the same order (see `NUMA.movePages`).
    public func move(pages indexes: [Int], to node: Int, moving move: NUMA.Move) throws(Errno) -> [PageStatus] {
        try NUMA.movePages(indexes.map { base + $0 * pageSize }, to: node, move: move)
    }
}
