import Synchronization
import XPMEMWire

/// The live attachments of one connection, for the event listener to find by segment. Keyed by the
/// range object: the broker's attachment numbers change when a reconnection re-registers them.
final class AttachmentTable: Sendable {
    private let ranges = Mutex<[ObjectIdentifier: AttachedRange]>([:])
    /// Attaches not in the table yet, which events must not miss.
    let attachesInFlight = AttachesInFlight()

    func insert(_ range: AttachedRange) { ranges.withLock { $0[ObjectIdentifier(range)] = range } }

    func remove(_ range: AttachedRange) { ranges.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(range)) } }

    /// The attachments of `segment`, in attachment order.
    func ranges(of segment: SegmentID) -> [AttachedRange] {
        ranges.withLock { table in
            table.values.filter { $0.segment == segment }.sorted { $0.id.rawValue < $1.id.rawValue }
        }
    }
}
