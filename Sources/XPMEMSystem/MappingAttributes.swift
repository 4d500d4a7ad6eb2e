@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// What an application may have set on the mappings of a range, which a new mapping over the same
/// addresses (`mmap(MAP_FIXED)`) silently drops: page protections, `mlock` (on fault or not), and
/// the `madvise` flags the kernel shows (`MADV_DONTFORK`, `MADV_DONTDUMP`, `MADV_HUGEPAGE`,
/// `MADV_NOHUGEPAGE`, `MADV_SEQUENTIAL`, `MADV_RANDOM`). Read from `/proc/self/smaps`, one piece per
/// mapping the range crosses.
public struct MappingAttributes: Equatable, Sendable {
    public struct Piece: Equatable, Sendable {
        public var start: UInt
        public var end: UInt
        public var protection: MemoryProtection
        /// `VmFlags` of smaps that a new mapping would lose: `lo`, `lf`, `dc`, `dd`, `hg`, `nh`, `sr`, `rr`.
        public var flags: Set<String>
    }

    public var pieces: [Piece]

    /// The flags this type carries over, and how each is set again.
    private static let advice: [String: CInt] = [
        "dc": MADV_DONTFORK, "dd": MADV_DONTDUMP, "hg": MADV_HUGEPAGE, "nh": MADV_NOHUGEPAGE,
        "sr": MADV_SEQUENTIAL, "rr": MADV_RANDOM,
    ]
    private static let locked = "lo"
    /// Shown beside `lo` for `mlock2(MLOCK_ONFAULT)`: locked as touched, so a sparse range stays sparse.
    private static let lockedOnFault = "lf"

    /// The attributes of `start..<start+length` now.
    public static func read(start: UInt, length: Int) throws(Errno) -> MappingAttributes {
        let end = start + UInt(length)
        var pieces: [Piece] = []
        // The piece of the mapping whose lines follow; nil for a mapping outside the range.
        var current: Int? = nil
        for line in try AddressSpace.readWholeFile("/proc/self/smaps").split(separator: "\n") {
            if let region = MappedRegion(smapsHeader: line) {
                current = nil
                guard region.end > start, region.start < end else { continue }
                var protection = MemoryProtection.none
                if region.permissions.hasPrefix("r") { protection.insert(.read) }
                if region.permissions.dropFirst().hasPrefix("w") { protection.insert(.write) }
                if region.permissions.dropFirst(2).hasPrefix("x") { protection.insert(.execute) }
                pieces.append(Piece(start: max(region.start, start), end: min(region.end, end),
                                    protection: protection, flags: []))
                current = pieces.count - 1
            } else if line.hasPrefix("VmFlags:"), let current {
                pieces[current].flags = Set(line.dropFirst("VmFlags:".count).split(separator: " ").map(String.init)
                    .filter { advice[$0] != nil || $0 == locked || $0 == lockedOnFault })
            }
        }
        return MappingAttributes(pieces: pieces)
    }

    /// Sets every piece's attributes again on whatever is mapped there now (a new mapping of the
    /// whole range, read-write, with no flags). Every piece is tried, so that one refusal does not
    /// leave, say, a later guard page accessible; the first refusal is thrown after.
    public func apply() throws(Errno) {
        var firstRefusal: Errno? = nil
        func attempt(_ call: () -> CInt) {
            if call() != 0, firstRefusal == nil { firstRefusal = Errno(rawValue: errno) }
        }
        for piece in pieces {
            let address = UnsafeMutableRawPointer(bitPattern: piece.start)
            let length = Int(piece.end - piece.start)
            if piece.protection != .readWrite {
                attempt { mprotect(address, length, piece.protection.rawValue) }
            }
            if piece.flags.contains(Self.lockedOnFault) {
                attempt { cxpmem_mlock_on_fault(address, length) }
            } else if piece.flags.contains(Self.locked) {
                attempt { mlock(address, length) }
            }
            for flag in piece.flags.sorted() {
                if let advice = Self.advice[flag] { attempt { madvise(address, length, advice) } }
            }
        }
        if let firstRefusal { throw firstRefusal }
    }
}
