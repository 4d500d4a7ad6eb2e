import XPMEM
import XPMEMSystem

/// How much the attachment cache may keep mapped: windows and bytes. Read from the same environment
/// variables as libxpmem's cache (README, "The attachment cache"), so one setting bounds both.
struct AttachCacheBounds: Sendable, Equatable {
    var entries: Int
    var bytes: Int

    static let defaultEntries = 4096

    /// `XPMEM_ATTACH_CACHE_ENTRIES` (default 4096) and `XPMEM_ATTACH_CACHE_BYTES` (default a quarter of
    /// the machine's memory; `K`, `M`, `G`, `T` suffixes). 0 keeps nothing beyond the operation that
    /// used it; a value that is not a size keeps the default.
    static func fromEnvironment() -> AttachCacheBounds {
        func size(_ name: String) -> Int? {
            guard let text = ThisProcess.environment(name) else { return nil }
            return text == "0" ? 0 : ByteCount(text)?.value
        }
        // XPMEM_ATTACH_CACHE=0 turns libxpmem's cache off; here it keeps nothing past an operation.
        if ThisProcess.environment("XPMEM_ATTACH_CACHE") == "0" { return AttachCacheBounds(entries: 0, bytes: 0) }
        return AttachCacheBounds(entries: size("XPMEM_ATTACH_CACHE_ENTRIES") ?? defaultEntries,
                                 bytes: size("XPMEM_ATTACH_CACHE_BYTES") ?? max(1, ThisProcess.physicalMemoryBytes / 4))
    }
}
