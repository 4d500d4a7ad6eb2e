@preconcurrency import Glibc
import SystemPackage

/// Transparent huge pages for shared memory (shmem THP): whether the kernel offers them, asking for
/// them on a mapping, and how much of a mapping they back.
public enum TransparentHugePages {
    /// `/sys/kernel/mm/transparent_hugepage/shmem_enabled`: when shmem gets huge pages.
    public enum ShmemPolicy: String, Sendable {
        case always, withinSize = "within_size", advise, never, deny, force

        /// Whether `MADV_HUGEPAGE` on a mapping gets it huge pages (where there is room for them).
        public var honoursAdvice: Bool { self != .never && self != .deny }
    }

    static let policyPath = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

    /// The policy in force (the bracketed word of the file); nil where the kernel has no THP.
    public static var shmemPolicy: ShmemPolicy? {
        guard let text = try? AddressSpace.readWholeFile(policyPath),
              let open = text.firstIndex(of: "["), let close = text[open...].firstIndex(of: "]") else { return nil }
        return ShmemPolicy(rawValue: String(text[text.index(after: open)..<close]))
    }

    /// Asks for huge pages on a mapping (`madvise(MADV_HUGEPAGE)`): its faults then allocate and map
    /// 2 MiB pages where the file's offsets and the mapping's addresses line up.
    public static func advise(_ address: UnsafeMutableRawPointer, length: Int) throws(Errno) {
        _ = try valueOrErrno { madvise(address, length, MADV_HUGEPAGE) }
    }

    /// The bytes of this process's mappings overlapping `start..<start+length` that huge pages back
    /// through one page-table entry each (`ShmemPmdMapped`, `FilePmdMapped` and, for private memory,
    /// `AnonHugePages` of `/proc/self/smaps`; for hugetlb mappings, `Shared_Hugetlb` and
    /// `Private_Hugetlb`).
    public static func pmdMappedBytes(start: UInt, length: Int) throws(Errno) -> Int {
        let end = start + UInt(length)
        var inRange = false
        var kilobytes = 0
        for line in try AddressSpace.readWholeFile("/proc/self/smaps").split(separator: "\n") {
            if let region = MappedRegion(smapsHeader: line) {
                inRange = region.end > start && region.start < end
            } else if inRange, line.hasPrefix("ShmemPmdMapped:") || line.hasPrefix("FilePmdMapped:")
                        || line.hasPrefix("AnonHugePages:") || line.hasPrefix("Shared_Hugetlb:")
                        || line.hasPrefix("Private_Hugetlb:") {
                kilobytes += Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
            }
        }
        return kilobytes * 1024
    }
}
