import Synchronization
import XPMEMWire

/// Attaches between their request to the broker and the moment their mapping is in the
/// connection's attachment table, and whether an event for their range came meanwhile.
///
/// The broker counts an attachment from the moment it answers the request, so an event for its
/// segment (an invalidation's begin, a move to a fresh file, a release) may reach the event thread
/// before the attaching thread has mapped the answer and put the range in the table. The event
/// then misses the range: an invalidation would be acknowledged with the range still readable, a
/// moved segment's new range would map the old file for good. Waiting for the attach in the event
/// thread is no way out: the broker holds back an attach that overlaps an open invalidation until
/// the window ends, which needs this very thread's acknowledgement. So the event thread marks the
/// attaches in flight instead, and an attach so marked throws its mapping away and asks again (a
/// new answer comes after the window, and with the new file).
///
/// Either the event thread marks an attach before it finishes, or the attach's range was in the
/// table before the event thread looked (insert, then finish; mark, then look): no event misses a
/// range for good.
final class AttachesInFlight: Sendable {
    private struct InFlight {
        var segment: SegmentID
        var range: Range<UInt64>
        var disturbed = false
    }

    private struct State {
        var nextTicket: UInt64 = 1
        var attaches: [UInt64: InFlight] = [:]
    }

    private let state = Mutex(State())

    /// A ticket for an attach of `range` of `segment` about to send its request.
    func start(_ segment: SegmentID, range: Range<UInt64>) -> UInt64 {
        state.withLock { state in
            let ticket = state.nextTicket
            state.nextTicket += 1
            state.attaches[ticket] = InFlight(segment: segment, range: range)
            return ticket
        }
    }

    /// An event for `range` of `segment` (nil: all of it) is being handled: the attaches in flight
    /// there must ask again. Call before looking up the table's ranges.
    func disturb(_ segment: SegmentID, range: Range<UInt64>? = nil) {
        state.withLock { state in
            for (ticket, attach) in state.attaches where attach.segment == segment {
                if let range, !range.overlaps(attach.range) { continue }
                state.attaches[ticket]?.disturbed = true
            }
        }
    }

    /// Ends the attach (after its range went into the table, or when it failed); true when an event
    /// for its range came while it was in flight.
    func finish(_ ticket: UInt64) -> Bool {
        state.withLock { $0.attaches.removeValue(forKey: ticket)?.disturbed ?? false }
    }
}
