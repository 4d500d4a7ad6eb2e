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

    /// Forgets the hints on `range` (it was written). Where splitting a range would pass
    /// `maximumRanges`, only its larger piece stays: forgetting more than asked is always safe.
    mutating func remove(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        // The first range ending after `range` starts; ranges are sorted and apart.
        var index = firstIndex(endingAfter: range.lowerBound)
        while index < ranges.count, ranges[index].lowerBound < range.upperBound {
            let existing = ranges[index]
            let before = existing.lowerBound < range.lowerBound ? existing.lowerBound..<range.lowerBound : nil
            let after = range.upperBound < existing.upperBound ? range.upperBound..<existing.upperBound : nil
            switch (before, after) {
            case (let before?, let after?):
                if ranges.count < Self.maximumRanges {
                    ranges[index] = before
                    ranges.insert(after, at: index + 1)
                } else {
                    ranges[index] = before.count >= after.count ? before : after
                }
                return
            case (let before?, nil):
                ranges[index] = before
                index += 1
            case (nil, let after?):
                ranges[index] = after
                return
            case (nil, nil):
                ranges.remove(at: index)
            }
        }
    }

    /// The index of the first range whose end is past `offset` (binary search).
    private func firstIndex(endingAfter offset: UInt64) -> Int {
        var low = 0, high = ranges.count
        while low < high {
            let middle = (low + high) / 2
            if ranges[middle].upperBound <= offset { low = middle + 1 } else { high = middle }
        }
        return low
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
