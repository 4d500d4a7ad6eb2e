/// The machine's pool of hugetlb pages (`/proc/meminfo`): what `MFD_HUGETLB` memory is taken from.
/// An administrator sizes it (`/proc/sys/vm/nr_hugepages`); pages outside it cannot be had this way.
public struct HugeTLBPool: Equatable, Sendable {
    /// The default huge page size (`Hugepagesize`), which `MFD_HUGETLB` without a size flag uses.
    public var pageSize: Int
    /// Pages in the pool (`HugePages_Total`), and those neither in use nor reserved by a mapping
    /// (`HugePages_Free` minus `HugePages_Rsvd`).
    public var totalPages: Int
    public var availablePages: Int

    /// The pool now; nil where the kernel has no hugetlb support (no `Hugepagesize` line).
    public static func current() -> HugeTLBPool? {
        guard let text = try? AddressSpace.readWholeFile("/proc/meminfo") else { return nil }
        return HugeTLBPool(meminfo: text)
    }

    /// Parses `/proc/meminfo`'s text.
    public init?(meminfo text: String) {
        var values: [Substring: Int] = [:]
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            guard words.count >= 2, words[0].hasSuffix(":"), let value = Int(words[1]) else { continue }
            values[words[0].dropLast()] = value
        }
        guard let kilobytes = values["Hugepagesize"], kilobytes > 0 else { return nil }
        pageSize = kilobytes * 1024
        totalPages = values["HugePages_Total"] ?? 0
        availablePages = max(0, (values["HugePages_Free"] ?? 0) - (values["HugePages_Rsvd"] ?? 0))
    }
}
