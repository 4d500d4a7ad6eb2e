import Synchronization
import XPMEMWire

/// The live attachments of one connection, for the event listener to find by segment.
final class AttachmentTable: Sendable {
    private let ranges = Mutex<[AttachmentID: AttachedRange]>([:])

    func insert(_ range: AttachedRange) { ranges.withLock { $0[range.id] = range } }

    func remove(_ id: AttachmentID) { ranges.withLock { _ = $0.removeValue(forKey: id) } }

    /// The attachments of `segment`, in attachment order.
    func ranges(of segment: SegmentID) -> [AttachedRange] {
        ranges.withLock { table in
            table.values.filter { $0.segment == segment }.sorted { $0.id.rawValue < $1.id.rawValue }
        }
    }
}
