@preconcurrency import Glibc
import CXPMEMShim

/// Copies that bypass the cache. A copy whose source and destination together outgrow the
/// last-level cache streams from and to DRAM, and an ordinary store first reads each destination
/// line in (a third stream of memory traffic) only to evict it again. Non-temporal stores write the
/// lines without reading them. Measured here (2026-12-02, a stand-alone C loop, not in the
/// repository), best of 10: 64 MiB 8.6 GB/s with glibc's memcpy, 16.9 GB/s streaming; 16 MiB 12.5
/// against 22.7. glibc streams only above a threshold it derives from the cache size CPUID reports,
/// which on this VM is the host's 256 MiB, not the 32 MiB this CPU's cores share.
public enum StreamingCopy {
    /// Copies `byteCount` bytes between non-overlapping buffers with non-temporal stores (x86-64;
    /// an ordinary memcpy elsewhere). The destination is not left in the cache.
    public static func copy(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, byteCount: Int) {
        guard byteCount > 0 else { return }
        cxpmem_copy_streaming(destination, source, byteCount)
    }

    /// Whether copying `byteCount` bytes is better done streaming: when the source and the
    /// destination together fill the last-level cache, so that neither stays in it anyway, and
    /// memcpy would not stream by itself (`memcpyStreams`). (`xpmem-bench copy`, 16 MiB into
    /// the same buffer again and again, 32 MiB cache: 19–20 GB/s streamed against 11–15 with memcpy.)
    public static func pays(forCopyOf byteCount: Int) -> Bool {
        lastLevelCacheBytes > 0 && byteCount >= lastLevelCacheBytes / 2 && !memcpyStreams(byteCount)
    }

    /// Whether glibc's memcpy streams a copy of `byteCount` bytes by itself, which it does a little
    /// faster than this loop (page-interleaved): from three quarters of the cache size CPUID reports
    /// (glibc 2.36's default `x86_non_temporal_threshold`; 192 MiB on this VM, where memcpy measured
    /// 7.8 GB/s at 160 MiB and 13.5 at 192, this loop 12.5–12.8 at both).
    public static func memcpyStreams(_ byteCount: Int) -> Bool {
        memcpyStreamingThreshold > 0 && byteCount >= memcpyStreamingThreshold
    }

    static let memcpyStreamingThreshold: Int = max(0, sysconf(Int32(_SC_LEVEL3_CACHE_SIZE))) / 4 * 3

    /// The size of the largest cache cpu0 has, from sysfs (`/sys/devices/system/cpu/cpu0/cache/
    /// index*/size` of the highest `level`), which describes the cache the cores really share;
    /// glibc's `_SC_LEVEL3_CACHE_SIZE` where sysfs says nothing; 0 when neither knows.
    public static let lastLevelCacheBytes: Int = {
        var best: (level: Int, bytes: Int) = (0, 0)
        for index in 0..<16 {
            let directory = "/sys/devices/system/cpu/cpu0/cache/index\(index)"
            guard let levelText = FileSystem.readSmallFile(directory + "/level"),
                  let level = firstWord(levelText).flatMap({ Int($0) }),
                  let sizeText = FileSystem.readSmallFile(directory + "/size"),
                  let bytes = firstWord(sizeText).flatMap(cacheSize) else { continue }
            if level > best.level || (level == best.level && bytes > best.bytes) { best = (level, bytes) }
        }
        if best.bytes > 0 { return best.bytes }
        return max(0, sysconf(Int32(_SC_LEVEL3_CACHE_SIZE)))
    }()

    private static func firstWord(_ text: String) -> Substring? { text.split(whereSeparator: \.isWhitespace).first }

    /// "32768K" (sysfs's form), "8M" or a plain count of bytes.
    static func cacheSize(_ text: Substring) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        if let last = text.last, let unit = units[last] { return Int(text.dropLast()).map { $0 * unit } }
        return Int(text)
    }
}
