/// The invalidation windows open on one attachment: which parts of it have their access cut, how,
/// and for which windows.
///
/// Windows may overlap (two sequences over the same bytes, from a broker that allows it or from a
/// repeated message): a part is cut once, by the first window over it, and given back once, when the
/// last window over it ends. Cutting a part again would open a moment in which it is readable in the
/// middle of the first window's change; giving it back at the first end would show the second
/// window's change half done.
struct SuspendedWindows {
    /// A range of the attachment (offset and length within it) cut one way, and the windows over it.
    struct Part: Equatable {
        var offset: Int
        var length: Int
        var cut: AccessCut
        /// Access comes back when the last of these ends.
        var sequences: Set<UInt64>
        /// The segment moved to another file while this part was cut: giving it back maps the new file,
        /// whatever the cut.
        var mapsOldFile = false

        var end: Int { offset + length }
    }

    /// Sorted by offset, disjoint.
    private(set) var parts: [Part] = []
    /// The open windows, as the application's `willInvalidate` saw them.
    private var notices: [UInt64: InvalidationNotice] = [:]

    var isEmpty: Bool { notices.isEmpty }

    /// Opens the window `notice` describes. Parts already cut join it; the returned ranges are not cut
    /// yet: the caller cuts each and says how with `recordCut`. A window already open changes nothing.
    mutating func open(_ notice: InvalidationNotice) -> [(offset: Int, length: Int)] {
        guard notices[notice.sequence] == nil, notice.length > 0 else { return [] }
        notices[notice.sequence] = notice
        let start = notice.offset, end = notice.offset + notice.length
        split(at: start)
        split(at: end)
        var uncut: [(offset: Int, length: Int)] = []
        var cursor = start
        for index in parts.indices where parts[index].offset < end && parts[index].end > start {
            if parts[index].offset > cursor { uncut.append((cursor, parts[index].offset - cursor)) }
            parts[index].sequences.insert(notice.sequence)
            cursor = parts[index].end
        }
        if cursor < end { uncut.append((cursor, end - cursor)) }
        return uncut
    }

    /// Records that a range `open` returned for window `sequence` was cut with `cut`.
    mutating func recordCut(offset: Int, length: Int, cut: AccessCut, sequence: UInt64) {
        let part = Part(offset: offset, length: length, cut: cut, sequences: [sequence], mapsOldFile: false)
        parts.insert(part, at: parts.firstIndex { $0.offset > offset } ?? parts.endIndex)
    }

    /// Ends window `sequence`: its notice, and the parts no other window covers any more, whose access
    /// the caller gives back. Nil for a window that is not open.
    mutating func close(_ sequence: UInt64) -> (notice: InvalidationNotice, uncovered: [Part])? {
        guard let notice = notices.removeValue(forKey: sequence) else { return nil }
        var uncovered: [Part] = []
        parts = parts.compactMap { part in
            var part = part
            part.sequences.remove(sequence)
            if part.sequences.isEmpty {
                uncovered.append(part)
                return nil
            }
            return part
        }
        return (notice, uncovered)
    }

    /// Ends every window (the broker is gone, or the mapping is): their notices by sequence, and every
    /// part cut.
    mutating func closeAll() -> (notices: [InvalidationNotice], parts: [Part]) {
        defer {
            notices.removeAll()
            parts.removeAll()
        }
        return (notices.values.sorted { $0.sequence < $1.sequence }, parts)
    }

    /// The ranges of an attachment of `length` bytes that no window cuts, in order.
    func uncutRanges(within length: Int) -> [(offset: Int, length: Int)] {
        var uncut: [(offset: Int, length: Int)] = []
        var cursor = 0
        for part in parts {
            if part.offset > cursor { uncut.append((cursor, part.offset - cursor)) }
            cursor = max(cursor, part.end)
        }
        if cursor < length { uncut.append((cursor, length - cursor)) }
        return uncut
    }

    /// The segment moved to another file: every part cut now still maps the old one.
    mutating func markCutPartsMappingOldFile() {
        for index in parts.indices { parts[index].mapsOldFile = true }
    }

    /// Splits the part that straddles `offset`, if one does, into two parts cut the same way.
    private mutating func split(at offset: Int) {
        guard let index = parts.firstIndex(where: { $0.offset < offset && offset < $0.end }) else { return }
        var tail = parts[index]
        tail.offset = offset
        tail.length = parts[index].end - offset
        parts[index].length = offset - parts[index].offset
        parts.insert(tail, at: index + 1)
    }
}
