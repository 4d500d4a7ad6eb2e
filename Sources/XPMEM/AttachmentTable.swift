import XPMEMSystem
import XPMEMWire

/// The live attachments of one connection, for the event listener to find by segment, and the
/// attaches on their way into it (`AttachesInFlight`). Keyed by the range object: the broker's
/// attachment numbers change when a reconnection re-registers them.
final class AttachmentTable: Sendable {
    private struct State {
        /// By segment, so that an event looks only at its segment's attachments: the event thread
        /// serves every invalidation, and its work is what each importer adds to one.
        var ranges: [SegmentID: [AttachedRange]] = [:]
        var inFlight = AttachesInFlight()

        mutating func insert(_ range: AttachedRange) {
            guard ranges[range.segment]?.contains(where: { $0 === range }) != true else { return }
            ranges[range.segment, default: []].append(range)
        }
    }

    private let state = ConditionLock(State())

    func insert(_ range: AttachedRange) { state.withLock { $0.insert(range) } }

    func remove(_ range: AttachedRange) {
        state.withLock { state in
            guard var ofSegment = state.ranges.removeValue(forKey: range.segment) else { return }
            ofSegment.removeAll { $0 === range }
            if !ofSegment.isEmpty { state.ranges[range.segment] = ofSegment }
        }
    }

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
                if let range { state.insert(range) }
                return nil
            }
            return range == nil ? nil : windows
        }
    }

    /// Returns once every one of `windows` has ended (or the connection did).
    func waitForEnd(of windows: Set<AttachesInFlight.Window>) {
        state.wait { $0.inFlight.openWindows.isDisjoint(with: windows) }
    }

    /// In attachment order: numbers change when a reconnection re-registers the mappings, so the
    /// order is taken when asked.
    private static func ranges(of segment: SegmentID, in state: State) -> [AttachedRange] {
        guard let ranges = state.ranges[segment] else { return [] }
        return ranges.count < 2 ? ranges : ranges.sorted { $0.id.rawValue < $1.id.rawValue }
    }
}
