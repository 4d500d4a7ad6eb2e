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

    /// The memfd's name says which: an importer reads it from the descriptor it is handed (the broker
    /// protocol does not need to carry it), and so does a fresh file after a move.
    static let transparentNamePrefix = "xpmem-thp:"
    static let basePagesNamePrefix = "xpmem:"

    var namePrefix: String { self == .transparent ? Self.transparentNamePrefix : Self.basePagesNamePrefix }

    /// The choice a segment's memfd was made with, from its name (`/proc/self/fd` link).
    static func of(_ file: borrowing OwnedDescriptor) -> HugePages {
        MemoryFile.name(of: file)?.hasPrefix("/memfd:" + transparentNamePrefix) == true ? .transparent : .none
    }

    /// Refuses `.transparent` where the kernel would not honour it, saying how to change that (what
    /// `makeSegment` checks).
    public func checkAvailable() throws(XPMEMError) {
        guard self == .transparent else { return }
        guard let policy = TransparentHugePages.shmemPolicy else {
            throw XPMEMError(.invalidArgument, "this kernel has no transparent huge pages")
        }
        guard policy.honoursAdvice else {
            throw XPMEMError(.invalidArgument,
                "shared-memory huge pages are off on this machine (shmem_enabled is \(policy.rawValue)); an administrator can allow them with `echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled`")
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

    /// "4 KiB", or "THP 254 of 256 MiB": what `xpmemctl segments` shows.
    public var description: String {
        guard requested == .transparent else { return "4 KiB" }
        return "THP \(hugePageBytes >> 20) of \(size >> 20) MiB"
    }
}
