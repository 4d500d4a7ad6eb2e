import XPMEMWire

/// An attach of an address-space segment waiting for its exporter to back the range: the broker
/// sent `backRange` and answers the importer when `rangeBacked` comes, or fails it at `deadline`.
struct PendingBacking: Equatable, Sendable {
    /// What the importer asked for, and so how it is answered.
    enum Purpose: Equatable, Sendable {
        /// An attach: answered with `attachedWindow` and the file.
        case attach
        /// A fault in an existing attachment: the exporter also fills the backed pages, and the
        /// importer is answered with `faultResolved`. The attachment record exists only while this waits.
        case fault
    }

    var purpose: Purpose = .attach
    var sequence: UInt64
    var segment: SegmentID
    var exporter: PeerID
    var importer: PeerID
    var requestID: UInt32
    var attachment: AttachmentID
    var start: UInt64
    var length: UInt64
    /// Microseconds on the broker's clock.
    var deadline: UInt64

    /// Whether `extents` are sorted, disjoint, non-empty pieces of the requested range.
    func accepts(_ extents: [BackedExtent]) -> Bool {
        var previousEnd = start
        for extent in extents {
            let (end, overflow) = extent.start.addingReportingOverflow(extent.length)
            guard !overflow, extent.length > 0, extent.start >= previousEnd, end <= start + length else { return false }
            previousEnd = end
        }
        return true
    }
}
