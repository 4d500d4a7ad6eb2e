/// The pages of one segment its owner hinted free (`hintFree`) and nobody has written since, as
/// disjoint, sorted byte ranges of whole pages.
///
/// A hint is trusted only as far as every write to the segment can be seen: the owner write-protects
/// its mapping before hinting and reports each write (`freeHintWritten`) before it lands. A writable
/// descriptor of the file in anyone else's hands (an importer's read-write attachment) could write
/// unseen, so once one is handed out the segment keeps no hints until its file is replaced.
public struct FreePageHints: Equatable, Sendable {
    /// Disjoint, sorted, never adjacent (adjacent ranges are merged).
    public private(set) var ranges: [Range<UInt64>] = []
    /// A writable descriptor of the segment's current file has been handed to a client.
    public private(set) var writableFileHandedOut = false

    /// Bounds the broker's memory per segment against an owner that hints every other page.
    public static let maximumRanges = 4096

    public init() {}

    public var byteCount: UInt64 { ranges.reduce(0) { $0 + ($1.upperBound - $1.lowerBound) } }

    /// Adds a hint; returns false (and changes nothing) when it is not trusted or would exceed
    /// `maximumRanges`.
    mutating func add(_ range: Range<UInt64>) -> Bool {
        guard !writableFileHandedOut else { return false }
        guard !range.isEmpty else { return true }
        var merged = range
        var kept: [Range<UInt64>] = []
        kept.reserveCapacity(ranges.count + 1)
        for existing in ranges {
            if existing.upperBound < merged.lowerBound || merged.upperBound < existing.lowerBound {
                kept.append(existing)
            } else {
                merged = min(existing.lowerBound, merged.lowerBound)..<max(existing.upperBound, merged.upperBound)
            }
        }
        guard kept.count < Self.maximumRanges else { return false }
        let index = kept.firstIndex { $0.lowerBound > merged.lowerBound } ?? kept.endIndex
        kept.insert(merged, at: index)
        ranges = kept
        return true
    }

    /// Forgets the hints on `range` (it was written).
    mutating func remove(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        ranges = ranges.flatMap { existing -> [Range<UInt64>] in
            guard existing.overlaps(range) else { return [existing] }
            var pieces: [Range<UInt64>] = []
            if existing.lowerBound < range.lowerBound { pieces.append(existing.lowerBound..<range.lowerBound) }
            if range.upperBound < existing.upperBound { pieces.append(range.upperBound..<existing.upperBound) }
            return pieces
        }
    }

    /// Returns every trusted range and forgets them: the caller drops their pages.
    mutating func takeAll() -> [Range<UInt64>] {
        defer { ranges = [] }
        return ranges
    }

    /// A writable descriptor went out: no hint of this file can be trusted any more.
    mutating func writableFileWasHandedOut() {
        writableFileHandedOut = true
        ranges = []
    }

    /// The segment has a fresh file that nobody else holds yet: no hints, nothing handed out.
    mutating func fileWasReplaced() { self = FreePageHints() }
}
