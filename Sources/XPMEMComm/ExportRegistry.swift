import XPMEM

/// The buffers this rank exported, to recognise a send from one of them.
final class ExportRegistry {
    private var buffers: [(start: UInt, end: UInt, id: SegmentID)] = []

    func add(_ buffer: SharedBuffer) {
        let start = UInt(bitPattern: buffer.bytes.baseAddress)
        buffers.append((start, start + UInt(buffer.bytes.count), buffer.segmentID))
    }

    func remove(_ id: SegmentID) { buffers.removeAll { $0.id == id } }

    /// The segment and offset holding all of `range`, if one does.
    func locate(_ range: UnsafeRawBufferPointer) -> (id: SegmentID, offset: Int)? {
        let start = UInt(bitPattern: range.baseAddress)
        let end = start + UInt(range.count)
        for buffer in buffers where buffer.start <= start && end <= buffer.end {
            return (buffer.id, Int(start - buffer.start))
        }
        return nil
    }
}
