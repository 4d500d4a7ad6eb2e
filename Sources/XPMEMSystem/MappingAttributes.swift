@preconcurrency import Glibc
import SystemPackage

/// What an application may have set on the mappings of a range, which a new mapping over the same
/// addresses (`mmap(MAP_FIXED)`) silently drops: page protections, `mlock`, and the `madvise`
/// flags the kernel shows (`MADV_DONTFORK`, `MADV_DONTDUMP`, `MADV_HUGEPAGE`, `MADV_NOHUGEPAGE`).
/// Read from `/proc/self/smaps`, one piece per mapping the range crosses.
public struct MappingAttributes: Equatable, Sendable {
    public struct Piece: Equatable, Sendable {
        public var start: UInt
        public var end: UInt
        public var protection: MemoryProtection
        /// `VmFlags` of smaps that a new mapping would lose: `lo`, `dc`, `dd`, `hg`, `nh`.
        public var flags: Set<String>
    }

    public var pieces: [Piece]

    /// The flags this type carries over, and how each is set again.
    private static let advice: [String: CInt] = [
        "dc": MADV_DONTFORK, "dd": MADV_DONTDUMP, "hg": MADV_HUGEPAGE, "nh": MADV_NOHUGEPAGE,
    ]
    private static let locked = "lo"

    /// The attributes of `start..<start+length` now.
    public static func read(start: UInt, length: Int) throws(Errno) -> MappingAttributes {
        let end = start + UInt(length)
        var pieces: [Piece] = []
        // The piece of the mapping whose lines follow; nil for a mapping outside the range.
        var current: Int? = nil
        for line in try AddressSpace.readWholeFile("/proc/self/smaps").split(separator: "\n") {
            if let region = mappingHeader(line) {
                current = nil
                guard region.end > start, region.start < end else { continue }
                var protection = MemoryProtection.none
                if region.permissions.hasPrefix("r") { protection.insert(.read) }
                if region.permissions.dropFirst().hasPrefix("w") { protection.insert(.write) }
                pieces.append(Piece(start: max(region.start, start), end: min(region.end, end),
                                    protection: protection, flags: []))
                current = pieces.count - 1
            } else if line.hasPrefix("VmFlags:"), let current {
                pieces[current].flags = Set(line.dropFirst("VmFlags:".count).split(separator: " ").map(String.init)
                    .filter { advice[$0] != nil || $0 == locked })
            }
        }
        return MappingAttributes(pieces: pieces)
    }

    /// Sets every piece's attributes again on whatever is mapped there now (a new mapping of the
    /// whole range, read-write, with no flags). Stops at the first refusal.
    public func apply() throws(Errno) {
        for piece in pieces {
            let address = UnsafeMutableRawPointer(bitPattern: piece.start)
            let length = Int(piece.end - piece.start)
            if piece.protection != .readWrite {
                _ = try valueOrErrno { mprotect(address, length, piece.protection.rawValue) }
            }
            for flag in piece.flags.sorted() {
                if flag == Self.locked {
                    _ = try valueOrErrno { mlock(address, length) }
                } else if let advice = Self.advice[flag] {
                    _ = try valueOrErrno { madvise(address, length, advice) }
                }
            }
        }
    }

    /// The region of a mapping's first line in smaps (`start-end perms offset dev inode path`); nil
    /// for the `Key: value` lines under it.
    private static func mappingHeader(_ line: Substring) -> MappedRegion? {
        let fields = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        guard fields.count >= 2, !fields[0].hasSuffix(":") else { return nil }
        let bounds = fields[0].split(separator: "-")
        guard bounds.count == 2, let low = UInt(bounds[0], radix: 16), let high = UInt(bounds[1], radix: 16) else {
            return nil
        }
        return MappedRegion(start: low, end: high, permissions: String(fields[1]), path: "")
    }
}
