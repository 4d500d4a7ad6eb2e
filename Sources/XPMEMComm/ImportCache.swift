import Synchronization
import XPMEM

/// Attachments of peers' buffers, kept for reuse: mapping a 1 MiB segment costs ~135 µs here, far
/// more than copying it, so a receiver attaches each sender buffer once and copies out of that
/// mapping every time after.
///
/// The broker's invalidations keep the cache honest: when a sender frees a buffer (removes its
/// segment, or exits) the entry is marked stale from the library's event thread before the
/// mapping goes, and the next use of that id attaches afresh (or fails, if the segment is gone).
/// Entries are only ever removed by the rank's own thread, so a pointer handed out stays mapped
/// until that thread asks again.
final class ImportCache: Sendable {
    private struct Entry {
        var grant: SegmentGrant
        var attachment: Attachment
        var stale = false
        var lastUse: UInt64
    }

    private struct State {
        var entries: [SegmentID: Entry] = [:]
        var clock: UInt64 = 0
        var statistics = AttachmentCacheStatistics()
    }

    private let broker: XPMEMBroker
    private let capacity: Int
    private let state = Mutex(State())

    init(broker: XPMEMBroker, capacity: Int = 64) {
        self.broker = broker
        self.capacity = capacity
    }

    var statistics: AttachmentCacheStatistics { state.withLock { $0.statistics } }

    /// The mapped bytes of segment `id`, attaching it on first use.
    func bytes(of id: SegmentID) throws(XPMEMError) -> UnsafeMutableRawBufferPointer {
        let cached: UnsafeMutableRawBufferPointer? = state.withLock { state in
            state.clock += 1
            guard var entry = state.entries[id], !entry.stale else { return nil }
            entry.lastUse = state.clock
            state.entries[id] = entry
            state.statistics.hits += 1
            return entry.attachment.bytes
        }
        if let cached { return cached }
        return try attach(id)
    }

    private func attach(_ id: SegmentID) throws(XPMEMError) -> UnsafeMutableRawBufferPointer {
        // Drop a stale entry and, at capacity, the least recently used one; detach outside the lock.
        let dropped: [Entry] = state.withLock { state in
            var dropped: [Entry] = []
            if let stale = state.entries.removeValue(forKey: id) { dropped.append(stale) }
            while state.entries.count >= capacity,
                  let oldest = state.entries.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
                dropped.append(state.entries.removeValue(forKey: oldest)!)
                state.statistics.evicted += 1
            }
            state.statistics.misses += 1
            return dropped
        }
        for entry in dropped {
            try? entry.attachment.detach()
            try? entry.grant.release()
        }
        let grant = try broker.get(id, access: .readWrite)
        let handlers = InvalidationHandlers(
            willInvalidate: { [weak self] notice in
                if notice.reason == .remove { self?.markStale(notice.segment) }
            },
            released: { [weak self] segment, _ in self?.markStale(segment) })
        let attachment = try grant.attach(policy: .block, handlers: handlers)
        let bytes = attachment.bytes
        state.withLock { state in
            state.entries[id] = Entry(grant: grant, attachment: attachment, lastUse: state.clock)
        }
        return bytes
    }

    private func markStale(_ id: SegmentID) {
        state.withLock { state in
            guard state.entries[id]?.stale == false else { return }
            state.entries[id]?.stale = true
            state.statistics.invalidated += 1
        }
    }

    /// Detaches everything (at the end of the job).
    func removeAll() {
        let entries = state.withLock { state in
            defer { state.entries.removeAll() }
            return Array(state.entries.values)
        }
        for entry in entries {
            try? entry.attachment.detach()
            try? entry.grant.release()
        }
    }
}

/// How the receiver's attachment cache fared.
public struct AttachmentCacheStatistics: Sendable, Equatable {
    public var hits = 0
    public var misses = 0
    /// Entries dropped because the sender freed or withdrew the buffer.
    public var invalidated = 0
    /// Entries detached to stay within capacity.
    public var evicted = 0
}
