import XPMEM

/// Memory that peers can copy from (and into) directly: an exported segment of its own, like
/// `MPI_Alloc_mem`. Messages of at least `Communicator.singleCopyThreshold` bytes sent from it go
/// single-copy (the receiver copies straight out of it); collectives need their buffers here.
public final class SharedBuffer {
    let segment: ExportedSegment
    private weak var owner: Communicator?

    init(segment: ExportedSegment, owner: Communicator) {
        self.segment = segment
        self.owner = owner
    }

    /// The whole buffer (its size is rounded up to whole pages).
    public var bytes: UnsafeMutableRawBufferPointer { segment.bytes }
    public var segmentID: SegmentID { segment.id }

    /// The first `count` elements as `T` (page alignment suits any type).
    public func elements<T: BitwiseCopyable>(_ type: T.Type, count: Int) -> UnsafeMutableBufferPointer<T> {
        precondition(count * MemoryLayout<T>.stride <= bytes.count, "\(count) elements do not fit \(bytes.count) bytes")
        return UnsafeMutableBufferPointer(start: bytes.baseAddress!.assumingMemoryBound(to: T.self), count: count)
    }

    /// How many of the buffer's pages are on each NUMA node.
    public func pagesPerNode() throws -> [Int: Int] { try segment.pagesPerNode() }

    /// Moves the buffer's pages to `node` while peers keep using it (see `ExportedSegment.migrate`).
    public func migrate(to node: Int, path: MigrationPath = .automatic) throws -> MigrationReport {
        try segment.migrate(to: node, path: path)
    }

    /// Withdraws the buffer: peers' cached attachments of it are invalidated and released (their
    /// caches drop them), then the memory is unmapped. No message from it may be in flight.
    public func free() throws {
        owner?.exports.remove(segment.id)
        try segment.remove()
    }
}

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
