import XPMEM

/// Memory that peers can copy from (and into) directly: an exported segment of its own, like
/// `MPI_Alloc_mem`. Messages of at least `Communicator.singleCopyThreshold` bytes sent from it go
/// single-copy (the receiver copies straight out of it); collectives need their buffers here.
public final class SharedBuffer {
    let segment: ExportedSegment
    /// Where the communicator recognises sends from this buffer; weak, as the buffer may outlive it.
    private weak var registry: ExportRegistry?

    init(segment: ExportedSegment, registry: ExportRegistry) {
        self.segment = segment
        self.registry = registry
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
        registry?.remove(segment.id)
        try segment.remove()
    }
}
