import SystemPackage
import XPMEMSystem

/// What pages back a segment made by `makeSegment`.
public enum HugePages: Sendable, Equatable {
    /// Base pages (4 KiB): what every shared mapping gets unless asked otherwise.
    case none
    /// Shared-memory transparent huge pages (2 MiB) where the kernel allows them
    /// (`/sys/kernel/mm/transparent_hugepage/shmem_enabled` is `advise`, `always`, `within_size` or
    /// `force`): the exporter's mapping and every importer's ask for them (`MADV_HUGEPAGE`), so faults
    /// allocate 2 MiB pages where they fit and both sides map them with one page-table entry.
    case transparent
    /// Pages of the machine's hugetlb pool (`MFD_HUGETLB`, the pool's default size, 2 MiB on x86-64),
    /// reserved when the segment is made: every page is huge, guaranteed, but only where an
    /// administrator set a pool aside (`/proc/sys/vm/nr_hugepages`). The segment's size is rounded up
    /// to whole huge pages, and attaches, invalidations and hints must be aligned to them.
    case hugeTLB

    /// The memfd's name says which: an importer reads it from the descriptor it is handed (the broker
    /// protocol does not need to carry it), and so does a fresh file after a move.
    static let transparentNamePrefix = "xpmem-thp:"
    static let hugeTLBNamePrefix = "xpmem-hugetlb:"
    static let basePagesNamePrefix = "xpmem:"

    var namePrefix: String {
        switch self {
        case .none: Self.basePagesNamePrefix
        case .transparent: Self.transparentNamePrefix
        case .hugeTLB: Self.hugeTLBNamePrefix
        }
    }

    /// The choice a segment's memfd was made with, from its name (`/proc/self/fd` link).
    static func of(_ file: borrowing OwnedDescriptor) -> HugePages {
        let name = MemoryFile.name(of: file) ?? ""
        if name.hasPrefix("/memfd:" + transparentNamePrefix) { return .transparent }
        if name.hasPrefix("/memfd:" + hugeTLBNamePrefix) { return .hugeTLB }
        return .none
    }

    /// The size a segment's pages have with this choice (a THP segment's file still has base pages:
    /// the kernel may map any part of it small).
    var pageSize: Int {
        self == .hugeTLB ? HugeTLBPool.current()?.pageSize ?? XPMEMSystem.pageSize : XPMEMSystem.pageSize
    }

    /// Refuses a choice the machine would not honour, saying how to change that (what `makeSegment`
    /// checks). For `.hugeTLB`, `size` bytes must fit in the pool's unreserved pages.
    public func checkAvailable(size: Int = 0) throws(XPMEMError) {
        if self == .hugeTLB { return try Self.checkPool(holds: size) }
        guard self == .transparent else { return }
        guard let policy = TransparentHugePages.shmemPolicy else {
            throw XPMEMError(.invalidArgument, "this kernel has no transparent huge pages")
        }
        guard policy.honoursAdvice else {
            throw XPMEMError(.invalidArgument,
                "shared-memory huge pages are off on this machine (shmem_enabled is \(policy.rawValue)); an administrator can allow them with `echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled`")
        }
    }

    private static func checkPool(holds size: Int) throws(XPMEMError) {
        guard let pool = HugeTLBPool.current() else {
            throw XPMEMError(.invalidArgument, "this kernel has no hugetlb pages")
        }
        let needed = (size + pool.pageSize - 1) / pool.pageSize
        guard pool.totalPages > 0 else {
            throw XPMEMError(.invalidArgument,
                "no hugetlb pool is set aside on this machine; an administrator can reserve one of N pages of \(pool.pageSize >> 20) MiB with `echo N > /proc/sys/vm/nr_hugepages`")
        }
        guard needed <= pool.availablePages else {
            throw XPMEMError(.resourceExhausted,
                "the hugetlb pool has \(pool.availablePages) unreserved pages of \(pool.pageSize >> 20) MiB, fewer than the \(needed) this segment needs (/proc/sys/vm/nr_hugepages sets the pool's size)")
        }
    }

    /// Asks for huge pages on a mapping of a segment made with this choice (nothing for `.none`).
    func advise(_ address: UnsafeMutableRawPointer, length: Int) throws(Errno) {
        if self == .transparent { try TransparentHugePages.advise(address, length: length) }
    }
}

/// What backs a segment in this process now (`ExportedSegment.pageBacking()`).
public struct PageBacking: Sendable, Equatable, CustomStringConvertible {
    public var requested: HugePages
    /// Bytes of the segment this process maps with huge pages (one page-table entry per 2 MiB).
    public var hugePageBytes: Int
    public var size: Int

    /// "4 KiB", "THP 254 of 256 MiB" or "hugetlb 2 MiB, 256 of 256 MiB": what `xpmemctl segments` shows.
    public var description: String {
        switch requested {
        case .none: "4 KiB"
        case .transparent: "THP \(hugePageBytes >> 20) of \(size >> 20) MiB"
        case .hugeTLB: "hugetlb \(requested.pageSize >> 20) MiB, \(hugePageBytes >> 20) of \(size >> 20) MiB"
        }
    }
}
