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
        var sequences: WindowSequences
        /// The segment moved to another file while this part was cut: giving it back maps the new file,
        /// whatever the cut.
        var mapsOldFile = false

        var end: Int { offset + length }
    }

    /// Sorted by offset, disjoint.
    private(set) var parts: [Part] = []
    /// The open windows, as the application's `willInvalidate` saw them. Rarely more than one: a
    /// list searched in place, not a dictionary that hashes on every invalidation.
    private var notices: [InvalidationNotice] = []

    var isEmpty: Bool { notices.isEmpty }

    /// Opens the window `notice` describes. Parts already cut join it; `cut` cuts each range no window
    /// cuts yet, in order, and says how. A window already open changes nothing. (A closure, not a
    /// returned list: this runs in every importer on every invalidation, and allocates nothing for
    /// the usual single window.)
    mutating func open(_ notice: InvalidationNotice, cut: (_ offset: Int, _ length: Int) -> AccessCut) {
        guard !notices.contains(where: { $0.sequence == notice.sequence }), notice.length > 0 else { return }
        notices.append(notice)
        let start = notice.offset, end = notice.offset + notice.length
        split(at: start)
        split(at: end)
        // After the splits every part that meets the window lies inside it.
        var index = parts.firstIndex { $0.end > start } ?? parts.endIndex
        var cursor = start
        while cursor < end {
            let next = index < parts.endIndex && parts[index].offset < end ? parts[index].offset : end
            if next > cursor {
                let part = Part(offset: cursor, length: next - cursor, cut: cut(cursor, next - cursor),
                                sequences: WindowSequences(notice.sequence))
                parts.insert(part, at: index)
                index += 1
                cursor = next
                continue
            }
            parts[index].sequences.insert(notice.sequence)
            cursor = parts[index].end
            index += 1
        }
    }

    /// Ends window `sequence`: `giveBack` is handed each part no other window covers any more, in
    /// order, for the caller to give its access back. Returns the window's notice; nil for a window
    /// that is not open.
    mutating func close(_ sequence: UInt64, giveBack: (Part) -> Void) -> InvalidationNotice? {
        guard let position = notices.firstIndex(where: { $0.sequence == sequence }) else { return nil }
        let notice = notices.remove(at: position)
        // The parts still covered slide down over those given back, in order: no part is copied
        // into a new array, and the usual end, which gives back every part, frees nothing.
        var kept = 0
        for index in parts.indices {
            parts[index].sequences.remove(sequence)
            if parts[index].sequences.isEmpty {
                giveBack(parts[index])
            } else {
                if kept != index { parts[kept] = parts[index] }
                kept += 1
            }
        }
        parts.removeLast(parts.count - kept)
        return notice
    }

    /// The windows, leaving none behind: to change them while a closure changes what holds them.
    mutating func take() -> SuspendedWindows {
        defer { self = SuspendedWindows() }
        return self
    }

    /// Ends every window (the broker is gone, or the mapping is): their notices by sequence, and every
    /// part cut.
    mutating func closeAll() -> (notices: [InvalidationNotice], parts: [Part]) {
        defer {
            notices.removeAll()
            parts.removeAll()
        }
        return (notices.sorted { $0.sequence < $1.sequence }, parts)
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
