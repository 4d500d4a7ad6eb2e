import Synchronization
import XPMEM
import XPMEMSystem
import XPMEMWire

/// Attachments of peers' buffers, kept for reuse: mapping a 1 MiB segment costs ~135 µs here, far
/// more than copying it, so a receiver attaches each sender buffer once and copies out of that
/// mapping every time after. Like libxpmem's cache, it is bounded by windows and by mapped bytes
/// (`AttachCacheBounds`), ages entries least recently used first, and shrinks under memory pressure.
///
/// The broker's invalidations keep the cache honest: when a sender frees a buffer (removes its
/// segment, or exits) the entry is marked stale from the library's event thread before the
/// mapping goes, and the next use of that id attaches afresh (or fails, if the segment is gone).
///
/// Nothing a caller still uses is taken away. Entries are removed by the rank's own thread, and by the
/// pressure watch's thread, which never takes what the current operation got; what the current operation got (`bytes(of:)` since the last `operationBoundary()`) stays, and so
/// does what the application was handed (`pin`), until its sender frees it. Pressure, seen by a
/// thread of its own, is acted on by that thread at once, whether the rank is busy or idle: a
/// quarter of the entries that may go, coldest first, per pressure event (the current operation's
/// stay). An operation boundary acts on an event that thread has not yet.
final class ImportCache: Sendable {
    private struct Entry {
        var grant: SegmentGrant
        var attachment: Attachment
        var stale = false
        var lastUse: UInt64
        /// The operation that last used it: entries of the current operation stay.
        var operation: UInt64
        /// Handed to the application (`Communicator.sharedBytes`): stays until its sender frees it.
        var pinned = false

        var byteCount: Int { attachment.bytes.count }
    }

    private struct State {
        var entries: [SegmentID: Entry] = [:]
        var clock: UInt64 = 0
        var operation: UInt64 = 0
        var bytes = 0
        /// Of `entries` and `bytes`, what pinned entries hold: when they are all there is, a bound
        /// passed costs no search.
        var pinnedEntries = 0
        var pinnedBytes = 0
        /// Segments whose invalidation came while they were being attached, before their entry existed.
        var staleBeforeEntry: Set<SegmentID> = []
        /// The entries marked stale, so that the next operation boundary finds them without a scan.
        var staleEntries: Set<SegmentID> = []
        var pressureEventsSeen: Int
        var statistics = AttachmentCacheStatistics()
        var reported: AttachmentCacheStatistics? = nil
        var lastReport: UInt64 = 0
        /// False once the broker refused a report (it predates them): no more are sent.
        var reporting = true

        mutating func setPinned(_ id: SegmentID, _ pinned: Bool) {
            guard let entry = entries[id], entry.pinned != pinned else { return }
            entries[id]?.pinned = pinned
            pinnedEntries += pinned ? 1 : -1
            pinnedBytes += pinned ? entry.byteCount : -entry.byteCount
        }

        /// Marks an entry stale: no more hits, unpinned, gone at the next operation boundary.
        mutating func markStale(_ id: SegmentID) {
            entries[id]?.stale = true
            setPinned(id, false)
            staleEntries.insert(id)
        }

        /// Removes an entry, keeping the totals.
        mutating func remove(_ id: SegmentID) -> Entry? {
            setPinned(id, false)
            staleEntries.remove(id)
            guard let entry = entries.removeValue(forKey: id) else { return nil }
            bytes -= entry.byteCount
            return entry
        }
    }

    private let broker: XPMEMBroker
    private let bounds: AttachCacheBounds
    private let pressure: MemoryPressureWatch
    private let state: Mutex<State>
    /// Whether the next operation boundary may have work: set when the cache is used, an entry goes
    /// stale, pressure is relieved, or a report waits for its interval. Every send and receive ends
    /// at a boundary, and a small message's has none: it then costs one atomic exchange, not the lock.
    private let boundaryWork = Atomic<Bool>(true)
    private let pressureSubscription = Mutex<UInt64?>(nil)
    /// How often, at most, the counters go to the broker (for `xpmemctl clients`).
    static let reportInterval: UInt64 = 1_000_000_000

    init(broker: XPMEMBroker, bounds: AttachCacheBounds = .fromEnvironment(),
         pressure: MemoryPressureWatch = .shared) {
        self.broker = broker
        self.bounds = bounds
        self.pressure = pressure
        state = Mutex(State(pressureEventsSeen: pressure.events))
        let token = pressure.subscribe { [weak self] in self?.relievePressure() }
        pressureSubscription.withLock { $0 = token }
    }

    deinit {
        if let token = pressureSubscription.withLock({ $0 }) { pressure.unsubscribe(token) }
    }

    /// On the pressure watch's thread: gives back for the events not acted on yet, keeping what the
    /// current operation uses (the rank's thread may be reading it now).
    private func relievePressure() {
        boundaryWork.store(true, ordering: .releasing)
        let dropped = state.withLock { state in
            Self.evictForPressure(&state, events: pressure.events, keepingOperation: state.operation)
        }
        detach(dropped)
    }

    /// A quarter of the entries that may go, coldest first, when `events` (read under the lock, so
    /// that the watch's thread and the rank's never both act on one event) is news; none otherwise.
    private static func evictForPressure(_ state: inout State, events: Int, keepingOperation: UInt64?) -> [Entry] {
        guard events > state.pressureEventsSeen else { return [] }
        state.pressureEventsSeen = events
        let evictable = state.entries.count - state.pinnedEntries
        let evicted = evictColdest(&state, count: (evictable + 3) / 4, keepingOperation: keepingOperation)
        state.statistics.pressureEvictions += evicted.count
        return evicted
    }

    var statistics: AttachmentCacheStatistics {
        state.withLock { state in
            var statistics = state.statistics
            statistics.entries = state.entries.count
            statistics.bytes = state.bytes
            return statistics
        }
    }

    /// The mapped bytes of segment `id`, attaching it on first use; valid at least until the next
    /// `operationBoundary()`.
    func bytes(of id: SegmentID) throws(XPMEMError) -> UnsafeMutableRawBufferPointer {
        boundaryWork.store(true, ordering: .releasing)
        let cached: UnsafeMutableRawBufferPointer? = state.withLock { state in
            state.clock += 1
            guard var entry = state.entries[id], !entry.stale else { return nil }
            entry.lastUse = state.clock
            entry.operation = state.operation
            state.entries[id] = entry
            state.statistics.hits += 1
            return entry.attachment.bytes
        }
        if let cached { return cached }
        return try attach(id)
    }

    /// As `bytes(of:)`, and the entry stays until its sender frees the buffer, whatever the bounds.
    func pin(_ id: SegmentID) throws(XPMEMError) -> UnsafeMutableRawBufferPointer {
        for _ in 0..<3 {
            let bytes = try bytes(of: id)
            // Pinned in the same step as it is found fresh: an entry that went stale in between is
            // attached again rather than pinned dead.
            let pinned = state.withLock { state in
                guard let entry = state.entries[id], !entry.stale,
                      entry.attachment.bytes.baseAddress == bytes.baseAddress else { return false }
                state.setPinned(id, true)
                return true
            }
            if pinned { return bytes }
        }
        throw XPMEMError(.notFound, "segment \(id) kept being invalidated while it was attached")
    }

    /// Called by the rank's thread between operations, when no pointer `bytes(of:)` returned is in
    /// use: acts on memory pressure seen meanwhile, and reports the counters to the broker now and
    /// then.
    func operationBoundary() {
        guard boundaryWork.exchange(false, ordering: .acquiringAndReleasing) else { return }
        let (dropped, report): ([Entry], AttachCacheCounters?) = state.withLock { state in
            state.operation += 1
            // Entries whose sender freed the buffer go at once; then what the operation that ended
            // kept beyond the bounds. Each step is skipped when it has nothing to do: most boundaries
            // (every small message's) have none, and even appending empty arrays showed in profiles.
            var dropped: [Entry] = []
            if !state.staleEntries.isEmpty {
                let stale = state.staleEntries
                dropped = stale.compactMap { state.remove($0) }
            }
            let evictedForBounds = evictBeyondBounds(&state, keepingOperation: nil)
            if !evictedForBounds.isEmpty {
                state.statistics.capacityEvictions += evictedForBounds.count
                dropped += evictedForBounds
            }
            let evictedForPressure = Self.evictForPressure(&state, events: pressure.events, keepingOperation: nil)
            if !evictedForPressure.isEmpty { dropped += evictedForPressure }
            // The clock last: every send and receive passes here, most with nothing new to report, and
            // reading it would cost an 8-byte message a sixth of its latency.
            guard state.reporting, state.reported != state.statistics else { return (dropped, nil) }
            let now = SharedMemoryAccess.monotonicNanoseconds()
            guard now - state.lastReport >= Self.reportInterval else {
                boundaryWork.store(true, ordering: .releasing)  // the report is due later: look again
                return (dropped, nil)
            }
            state.lastReport = now
            state.reported = state.statistics
            return (dropped, Self.counters(state))
        }
        detach(dropped)
        if let report { send(report) }
    }

    /// Sends the counters; a broker that refuses them (it predates the message) is not sent more.
    private func send(_ report: AttachCacheCounters) {
        do {
            try broker.reportAttachCache(report)
        } catch where error.code == .protocolError && error.message.contains("unknownType") {
            state.withLock { $0.reporting = false }
        } catch {}
    }

    private func attach(_ id: SegmentID) throws(XPMEMError) -> UnsafeMutableRawBufferPointer {
        state.withLock { _ = $0.staleBeforeEntry.remove(id) }
        let grant = try broker.get(id, access: .readWrite)
        let handlers = InvalidationHandlers(
            willInvalidate: { [weak self] notice in
                if notice.reason == .remove { self?.markStale(notice.segment) }
            },
            released: { [weak self] segment, _ in self?.markStale(segment) })
        let attachment: Attachment
        do {
            attachment = try grant.attach(policy: .block, handlers: handlers)
        } catch {
            try? grant.release()
            throw error
        }
        let bytes = attachment.bytes
        // Replace a stale entry, then keep within the bounds: the coldest entries that neither the
        // current operation nor the application holds go, and are detached outside the lock.
        let dropped: [Entry] = state.withLock { state in
            var dropped: [Entry] = []
            if let stale = state.remove(id) { dropped.append(stale) }
            let entry = Entry(grant: grant, attachment: attachment, lastUse: state.clock, operation: state.operation)
            state.entries[id] = entry
            state.bytes += entry.byteCount
            // Invalidated before it was recorded here: served for this operation, gone at the next.
            if state.staleBeforeEntry.remove(id) != nil {
                state.markStale(id)
                state.statistics.invalidated += 1
            }
            state.statistics.misses += 1
            let evicted = evictBeyondBounds(&state, keepingOperation: state.operation)
            state.statistics.capacityEvictions += evicted.count
            return dropped + evicted
        }
        detach(dropped)
        return bytes
    }

    /// Removes the coldest entries that may go until the cache is within its bounds (or none may go).
    private func evictBeyondBounds(_ state: inout State, keepingOperation: UInt64?) -> [Entry] {
        // Over a bound only because of pinned entries, which never go: nothing to search.
        let overCount = state.entries.count > bounds.entries && state.entries.count > state.pinnedEntries
        let overBytes = state.bytes > bounds.bytes && state.bytes > state.pinnedBytes
        guard overCount || overBytes else { return [] }
        var candidates = Self.evictionOrder(state, keepingOperation: keepingOperation)[...]
        var evicted: [Entry] = []
        while state.entries.count > bounds.entries || state.bytes > bounds.bytes, let id = candidates.popFirst() {
            if let entry = state.remove(id) { evicted.append(entry) }
        }
        return evicted
    }

    /// The entries that may go, in the order they go: stale ones first, then the coldest; never a
    /// pinned one nor one the operation `keepingOperation` used.
    private static func evictionOrder(_ state: State, keepingOperation: UInt64?) -> [SegmentID] {
        state.entries.filter { !$0.value.pinned && $0.value.operation != keepingOperation }
            .sorted { ($0.value.stale ? 0 : 1, $0.value.lastUse) < ($1.value.stale ? 0 : 1, $1.value.lastUse) }
            .map(\.key)
    }

    /// Removes up to `count` entries in eviction order.
    private static func evictColdest(_ state: inout State, count: Int, keepingOperation: UInt64?) -> [Entry] {
        guard count > 0 else { return [] }
        return evictionOrder(state, keepingOperation: keepingOperation).prefix(count).compactMap { state.remove($0) }
    }

    private static func counters(_ state: State) -> AttachCacheCounters {
        AttachCacheCounters(
            hits: UInt64(state.statistics.hits), misses: UInt64(state.statistics.misses),
            capacityEvictions: UInt64(state.statistics.capacityEvictions),
            pressureEvictions: UInt64(state.statistics.pressureEvictions),
            entries: UInt64(state.entries.count), bytes: UInt64(state.bytes))
    }

    private func detach(_ entries: [Entry]) {
        for entry in entries {
            try? entry.attachment.detach()
            try? entry.grant.release()
        }
    }

    private func markStale(_ id: SegmentID) {
        state.withLock { state in
            guard let entry = state.entries[id], !entry.stale else {
                // Being attached, not recorded yet (or attached again in place of a stale entry):
                // `attach` marks it when it records it. Marking too much costs an attach again.
                state.staleBeforeEntry.insert(id)
                return
            }
            state.markStale(id)
            state.statistics.invalidated += 1
        }
        boundaryWork.store(true, ordering: .releasing)
    }

    /// Detaches everything (at the end of the job), then reports the final counters to the broker.
    func removeAll() {
        let (entries, report) = state.withLock { state in
            let entries = Array(state.entries.values)
            state.entries.removeAll()
            state.bytes = 0
            state.pinnedEntries = 0
            state.pinnedBytes = 0
            state.staleEntries.removeAll()
            return (entries, state.reporting ? Self.counters(state) : nil)
        }
        detach(entries)
        if let report { send(report) }
    }
}

/// How the receiver's attachment cache fared.
public struct AttachmentCacheStatistics: Sendable, Equatable {
    public var hits = 0
    public var misses = 0
    /// Entries dropped because the sender freed or withdrew the buffer.
    public var invalidated = 0
    /// Entries detached to stay within the bounds (`XPMEM_ATTACH_CACHE_ENTRIES`, `_BYTES`).
    public var capacityEvictions = 0
    /// Entries detached because the machine was short of memory.
    public var pressureEvictions = 0
    /// Windows mapped now, and their bytes.
    public var entries = 0
    public var bytes = 0

    /// Entries detached for either reason.
    public var evicted: Int { capacityEvictions + pressureEvictions }
}
