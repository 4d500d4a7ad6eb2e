import XPMEMWire

/// Attaches between their request to the broker and the moment their mapping is in the
/// connection's attachment table, and the events for their ranges that came meanwhile. Kept by
/// `AttachmentTable`, under its lock.
///
/// The broker counts an attachment from the moment it answers the request, so an event for its
/// segment (an invalidation's begin, a move to a fresh file, a release) may reach the event thread
/// before the attaching thread has mapped the answer and put the range in the table: handled then,
/// the event would miss the range (an invalidation acknowledged with the range still readable, a
/// moved segment's new range mapping the old file for good). Waiting for the attach in the event
/// thread is no way out: the broker holds back an attach that overlaps an open invalidation until
/// the window ends, which needs this very thread's acknowledgement. So the event marks the attaches
/// in flight instead, under the same lock as its look at the table, and a marked attach never goes
/// into the table: it throws its mapping away, waits for the invalidation windows that marked it to
/// end, and asks again (a new answer comes with the new file, or is refused after a release).
struct AttachesInFlight {
    /// An invalidation window of a segment, by its sequence number.
    struct Window: Hashable {
        var segment: SegmentID
        var sequence: UInt64
    }

    private struct Attach {
        var segment: SegmentID
        var range: Range<UInt64>
        var disturbed = false
        var windows: Set<Window> = []
    }

    private var nextTicket: UInt64 = 1
    private var attaches: [UInt64: Attach] = [:]
    /// Windows that marked an attach, until they end.
    private(set) var openWindows: Set<Window> = []

    /// A ticket for an attach of `range` of `segment` about to send its request.
    mutating func start(_ segment: SegmentID, range: Range<UInt64>) -> UInt64 {
        let ticket = nextTicket
        nextTicket += 1
        attaches[ticket] = Attach(segment: segment, range: range)
        return ticket
    }

    /// An event for `range` of `segment` (nil: all of it) is being handled; `window`, when it opens an
    /// invalidation window.
    mutating func disturb(_ segment: SegmentID, range: Range<UInt64>?, window sequence: UInt64?) {
        for (ticket, attach) in attaches where attach.segment == segment {
            if let range, !range.overlaps(attach.range) { continue }
            attaches[ticket]?.disturbed = true
            if let sequence {
                let window = Window(segment: segment, sequence: sequence)
                attaches[ticket]?.windows.insert(window)
                openWindows.insert(window)
            }
        }
    }

    /// Checked for emptiness first: every invalidation's end comes here, almost never with an attach
    /// in flight, and removing from an empty set still hashes.
    mutating func windowEnded(_ window: Window) {
        if !openWindows.isEmpty { openWindows.remove(window) }
    }

    /// The segment was released (its exporter removed it, or died inside a window): no `end` will
    /// come for its windows.
    mutating func windowsEnded(of segment: SegmentID) { openWindows = openWindows.filter { $0.segment != segment } }

    /// The broker is gone: no window it opened will end with an event.
    mutating func allWindowsEnded() { openWindows.removeAll() }

    /// Ends the attach: nil when no event came for its range, else the windows to wait for before
    /// asking again.
    mutating func finish(_ ticket: UInt64) -> Set<Window>? {
        guard let attach = attaches.removeValue(forKey: ticket), attach.disturbed else { return nil }
        return attach.windows
    }
}
