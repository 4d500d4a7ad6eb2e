/// What a client's attachment cache did (the C library's, `xpmem_attach_cache_stats`), as the client
/// last reported it with `reportAttachCache`, for `xpmemctl clients`.
public struct AttachCacheCounters: Equatable, Sendable, Codable {
    /// Attaches served from the cache, and attaches it had no window for.
    public var hits, misses: UInt64
    /// Idle windows unmapped to stay within the cache's bounds, and because of memory pressure.
    public var capacityEvictions, pressureEvictions: UInt64
    /// Windows the cache holds mapped (in use or idle), and their bytes.
    public var entries, bytes: UInt64

    public init(hits: UInt64, misses: UInt64, capacityEvictions: UInt64, pressureEvictions: UInt64, entries: UInt64,
                bytes: UInt64) {
        self.hits = hits
        self.misses = misses
        self.capacityEvictions = capacityEvictions
        self.pressureEvictions = pressureEvictions
        self.entries = entries
        self.bytes = bytes
    }

    /// The encoded size: six 64-bit counters.
    static let encodedSize = 48

    func encode(into writer: inout WireWriter) {
        for counter in [hits, misses, capacityEvictions, pressureEvictions, entries, bytes] { writer.write(counter) }
    }

    static func decode(from reader: inout WireReader) throws(FrameDecodingError) -> AttachCacheCounters {
        AttachCacheCounters(
            hits: try reader.read(UInt64.self, "hits"), misses: try reader.read(UInt64.self, "misses"),
            capacityEvictions: try reader.read(UInt64.self, "capacityEvictions"),
            pressureEvictions: try reader.read(UInt64.self, "pressureEvictions"),
            entries: try reader.read(UInt64.self, "entries"), bytes: try reader.read(UInt64.self, "bytes"))
    }
}
