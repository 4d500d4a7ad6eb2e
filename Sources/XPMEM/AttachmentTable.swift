import XPMEMSystem
import XPMEMWire

/// The live attachments of one connection, for the event listener to find by segment, and the
/// attaches on their way into it (`AttachesInFlight`). Keyed by the range object: the broker's
/// attachment numbers change when a reconnection re-registers them.
final class AttachmentTable: Sendable {
    private struct State {
        var ranges: [ObjectIdentifier: AttachedRange] = [:]
        var inFlight = AttachesInFlight()
    }

    private let state = ConditionLock(State())

    func insert(_ range: AttachedRange) { state.withLock { $0.ranges[ObjectIdentifier(range)] = range } }

    func remove(_ range: AttachedRange) { state.withLock { _ = $0.ranges.removeValue(forKey: ObjectIdentifier(range)) } }

    /// The attachments of `segment`, in attachment order.
    func ranges(of segment: SegmentID) -> [AttachedRange] {
        state.withLock { Self.ranges(of: segment, in: $0) }
    }

    /// The attachments an event for `range` of `segment` (nil: all of it) must handle, with the
    /// attaches still in flight there marked in the same step: either the event sees a new range,
    /// or its attach asks again, never both. `window`: the sequence of an invalidation that begins.
    func rangesForEvent(of segment: SegmentID, touching range: Range<UInt64>?, window: UInt64? = nil) -> [AttachedRange] {
        state.withLock { state in
            state.inFlight.disturb(segment, range: range, window: window)
            return Self.ranges(of: segment, in: state)
        }
    }

    func windowEnded(of segment: SegmentID, sequence: UInt64) {
        state.withLock { $0.inFlight.windowEnded(.init(segment: segment, sequence: sequence)) }
    }

    /// The segment was released: attaches waiting for its windows ask again at once (and are refused).
    func windowsEnded(of segment: SegmentID) { state.withLock { $0.inFlight.windowsEnded(of: segment) } }

    /// The connection ended: attaches waiting for its windows ask again at once.
    func allWindowsEnded() { state.withLock { $0.inFlight.allWindowsEnded() } }

    /// A ticket for an attach about to send its request; end it with `finishAttach`.
    func startAttach(of segment: SegmentID, range: Range<UInt64>) -> UInt64 {
        state.withLock { $0.inFlight.start(segment, range: range) }
    }

    /// Ends an attach, putting `range` (nil: the attach failed) in the table unless an event came for
    /// it meanwhile. Returns nil when it went in (or failed), else the invalidation windows to wait
    /// for (`waitForEnd`) before asking again.
    func finishAttach(_ ticket: UInt64, inserting range: AttachedRange?) -> Set<AttachesInFlight.Window>? {
        state.withLock { state in
            guard let windows = state.inFlight.finish(ticket) else {
                if let range { state.ranges[ObjectIdentifier(range)] = range }
                return nil
            }
            return range == nil ? nil : windows
        }
    }

    /// Returns once every one of `windows` has ended (or the connection did).
    func waitForEnd(of windows: Set<AttachesInFlight.Window>) {
        state.wait { $0.inFlight.openWindows.isDisjoint(with: windows) }
    }

    private static func ranges(of segment: SegmentID, in state: State) -> [AttachedRange] {
        state.ranges.values.filter { $0.segment == segment }.sorted { $0.id.rawValue < $1.id.rawValue }
    }
}
