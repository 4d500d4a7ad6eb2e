import XPMEM

/// The communicator's single-copy memory: buffers this rank allocates for peers to copy from (and
/// recognises sends from), and peers' buffers mapped here through the attachment cache.
final class SharedBuffers {
    let exports = ExportRegistry()
    private let imports: ImportCache
    private let broker: XPMEMBroker
    private let rank: Int

    init(broker: XPMEMBroker, rank: Int) {
        self.broker = broker
        self.rank = rank
        imports = ImportCache(broker: broker)
    }

    /// Allocates `byteCount` bytes (rounded up to whole pages) as an exported segment, placed by `placement`.
    func allocate(byteCount: Int, placement: Placement) throws(CommunicatorError) -> SharedBuffer {
        let segment: ExportedSegment
        do {
            segment = try broker.makeSegment(size: max(byteCount, 1), name: "comm buffer rank \(rank)",
                                             placement: placement)
        } catch {
            throw .broker(error)
        }
        let buffer = SharedBuffer(segment: segment, registry: exports)
        exports.add(buffer)
        return buffer
    }

    /// The bytes of a peer's buffer, attached on first use and cached (see `ImportCache`).
    func peerBytes(of segment: SegmentID) throws(CommunicatorError) -> UnsafeMutableRawBufferPointer {
        do {
            return try imports.bytes(of: segment)
        } catch {
            throw .broker(error)
        }
    }

    /// As `peerBytes`, and kept mapped until its sender frees it (handed to the application).
    func pinnedPeerBytes(of segment: SegmentID) throws(CommunicatorError) -> UnsafeMutableRawBufferPointer {
        do {
            return try imports.pin(segment)
        } catch {
            throw .broker(error)
        }
    }

    /// Between two operations of the rank: no pointer `peerBytes` returned is in use (`ImportCache`).
    func operationBoundary() { imports.operationBoundary() }

    var attachmentCache: AttachmentCacheStatistics { imports.statistics }

    /// Detaches every peer buffer (at the end of the job).
    func detachPeerBuffers() { imports.removeAll() }
}
