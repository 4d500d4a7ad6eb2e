import XPMEMSystem

/// How much the attachment cache may keep mapped: windows and bytes. Read from the same environment
/// variables as libxpmem's cache (README, "The attachment cache"), so one setting bounds both.
struct AttachCacheBounds: Sendable, Equatable {
    var entries: Int
    var bytes: Int

    static let defaultEntries = 4096

    /// `XPMEM_ATTACH_CACHE_ENTRIES` (default 4096) and `XPMEM_ATTACH_CACHE_BYTES` (default a quarter of
    /// the machine's memory); a value that is not a positive integer keeps the default.
    static func fromEnvironment() -> AttachCacheBounds {
        func positive(_ name: String) -> Int? {
            guard let text = ThisProcess.environment(name), let value = Int(text), value > 0 else { return nil }
            return value
        }
        return AttachCacheBounds(entries: positive("XPMEM_ATTACH_CACHE_ENTRIES") ?? defaultEntries,
                                 bytes: positive("XPMEM_ATTACH_CACHE_BYTES") ?? max(1, ThisProcess.physicalMemoryBytes / 4))
    }
}
