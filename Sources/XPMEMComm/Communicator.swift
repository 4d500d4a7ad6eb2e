import XPMEM
import XPMEMSystem

/// A small MPI-like communicator among the ranks of one job on this host: rank, size, barrier,
/// send and receive, and a single-copy allreduce.
///
/// Each rank exports a control segment (see `ControlLayout`) holding one single-producer
/// single-consumer ring per sender; ranks find each other's segments through `Rendezvous` and
/// attach them all. Small messages are copied into the receiver's ring and busy-polled out of it
/// (a cross-core wake-up through the kernel costs ~30 µs here, a poll ~0.06 µs). Messages of at
/// least `singleCopyThreshold` bytes sent from a `SharedBuffer` go **single-copy**: the ring
/// carries only (segment, offset) and the receiver copies straight out of the sender's pages
/// through an attachment it keeps cached, then acknowledges.
///
/// Messages between two ranks arrive in the order they were sent; `receive` takes the next one
/// from its source and checks its tag (there is no out-of-order tag matching). One thread per
/// rank uses the communicator.
///
/// Each job has a type of its own, composed here: `ControlSegments` (the rendezvous and every
/// rank's control segment), `Barrier`, `MessageRings` (eager messages), `SingleCopyTransfer`,
/// `SharedBuffers` (allocated and imported buffers); `finish` orders the shutdown.
public final class Communicator {
    public let rank: Int
    public let size: Int
    public let launcher: String
    /// Messages at least this long, sent from a `SharedBuffer`, go single-copy
    /// (`XPMEM_COMM_SINGLE_COPY_BYTES` overrides the default).
    public var singleCopyThreshold: Int

    /// Kept open for the communicator's life: every segment and attachment lives on this connection.
    private let broker: XPMEMBroker
    private let segments: ControlSegments
    let rankBarrier: Barrier
    private let rings: MessageRings
    private let singleCopy: SingleCopyTransfer
    /// How message bytes are copied (streaming stores for messages larger than the cache holds).
    let copier: MessageCopy
    let buffers: SharedBuffers
    private var finished = false

    /// Messages sent through the rings, and single-copy.
    public var eagerMessages: Int { rings.messagesSent }
    public var singleCopyMessages: Int { singleCopy.messagesSent }
    /// Single-copy messages received whose upper part the sender copied into the receive buffer
    /// (`CooperativeCopy`).
    public var cooperativelyCopiedMessages: Int { singleCopy.cooperation.messagesHelped }

    /// Joins the job described by `environment` (default: this process's, see `JobEnvironment`).
    /// - Parameters:
    ///   - socketPath: the broker; nil means `$XPMEM_SOCKET`, else the per-user default.
    ///   - timeout: how long to wait for every peer to publish its control segment.
    public convenience init(environment: JobEnvironment? = nil, socketPath: String? = nil,
                            timeout: Duration = .seconds(60)) throws {
        try self.init(environment: environment, socketPath: socketPath, timeout: timeout, copier: .fromEnvironment())
    }

    /// As above, with the copy strategy given (tests).
    init(environment: JobEnvironment?, socketPath: String?, timeout: Duration, copier: MessageCopy) throws {
        let job = try environment ?? JobEnvironment.current()
        rank = job.rank
        size = job.size
        launcher = job.launcher
        singleCopyThreshold = ThisProcess.environment("XPMEM_COMM_SINGLE_COPY_BYTES").flatMap { Int($0) } ?? 16384
        do {
            broker = try XPMEMBroker.connect(socketPath: socketPath, name: "rank \(job.rank)")
        } catch {
            throw CommunicatorError.broker(error)
        }
        segments = try ControlSegments(broker: broker, job: job, timeout: timeout)
        let waiter = PeerWaiter(departed: segments.departed)
        rankBarrier = Barrier(rank: rank, size: size, addresses: segments.addresses, waiter: waiter)
        rings = MessageRings(rank: rank, size: size, addresses: segments.addresses, waiter: waiter)
        buffers = SharedBuffers(broker: broker, rank: rank)
        // Splitting a copy between both ranks already wins at 64 KiB here (pingpong, README: 16–18
        // GB/s against 10–13 alone; 54 against 25 at 1 and 4 MiB); below, the handshake is most of it.
        let cooperativeThreshold = ThisProcess.environment("XPMEM_COMM_COOPERATIVE_COPY_BYTES").flatMap { Int($0) } ?? (64 << 10)
        self.copier = copier
        singleCopy = SingleCopyTransfer(rank: rank, size: size, rings: rings, buffers: buffers,
                                        cooperativeThreshold: cooperativeThreshold, copier: copier)
        // Everyone has attached everyone once all arrive: the rendezvous files are no longer needed.
        try barrier()
        segments.withdrawFromRendezvous()
    }

    deinit {
        rankBarrier.deallocate()
        rings.deallocate()
        singleCopy.deallocate()
    }

    private func checkPeer(_ peer: Int) throws(CommunicatorError) {
        guard (0..<size).contains(peer), peer != rank else { throw .invalidRank(peer) }
    }

    // MARK: Barrier

    /// Returns once every rank has called it as many times as this one. Each rank stores its epoch
    /// into every peer's segment, then polls its own.
    public func barrier() throws(CommunicatorError) {
        buffers.operationBoundary()
        try rankBarrier.wait()
    }

    // MARK: Point to point

    /// Sends `bytes` to rank `destination`. Returns when the bytes may be reused: at once for small
    /// messages (they were copied into the receiver's ring), after the receiver copied them for
    /// single-copy ones.
    public func send(_ bytes: UnsafeRawBufferPointer, to destination: Int, tag: Int = 0) throws(CommunicatorError) {
        try checkPeer(destination)
        buffers.operationBoundary()
        if bytes.count >= singleCopyThreshold, let source = buffers.exports.locate(bytes) {
            try singleCopy.send(bytes, at: source, to: destination, tag: tag)
        } else {
            try rings.send(bytes, to: destination, tag: tag)
        }
    }

    /// Receives the next message from `source` into `buffer` and returns its length.
    /// - Throws: `tagMismatch` if that message has another tag, `truncated` if it does not fit (in
    ///   both cases it stays queued).
    @discardableResult
    public func receive(into buffer: UnsafeMutableRawBufferPointer, from source: Int, tag: Int = 0) throws
        -> Int
    {
        try checkPeer(source)
        buffers.operationBoundary()
        let slot = try rings.nextSlot(from: source)
        let header = SlotHeader(readingFrom: slot)
        let length = Int(header.totalLength)
        guard header.tag == Int64(tag) else {
            throw CommunicatorError.tagMismatch(source: source, expected: tag, found: Int(header.tag))
        }
        guard length <= buffer.count else {
            throw CommunicatorError.truncated(source: source, length: length, capacity: buffer.count)
        }
        if header.kind == SlotKind.singleCopy.rawValue {
            try singleCopy.receive(length, describedIn: slot, from: source, into: buffer)
        } else {
            try rings.receive(length, startingAt: slot, from: source, into: buffer)
        }
        return length
    }

    // MARK: Buffers

    /// Allocates `byteCount` bytes (rounded up to whole pages) of memory peers can copy from directly.
    /// `placement` puts its pages on NUMA nodes (see `Placement`).
    public func allocate(byteCount: Int, placement: Placement = .firstTouch) throws -> SharedBuffer {
        try buffers.allocate(byteCount: byteCount, placement: placement)
    }

    /// The bytes of another rank's `SharedBuffer` (by its `segmentID`), mapped here with the `.block`
    /// policy through the attachment cache: accesses during an invalidation (a migration, say)
    /// sleep until it ends. Valid until that rank frees the buffer: the attachment cache never takes
    /// it away before.
    public func sharedBytes(of segment: SegmentID) throws -> UnsafeMutableRawBufferPointer {
        try buffers.pinnedPeerBytes(of: segment)
    }

    /// How the single-copy receive side's attachment cache has fared.
    public var attachmentCache: AttachmentCacheStatistics { buffers.attachmentCache }

    // MARK: Collectives support

    /// This rank's publication line: where it announces its buffers to a collective.
    func publish(_ values: [UInt64]) {
        let line = segments.addresses.publicationLine(of: rank)
        precondition(values.count * 8 <= ControlLayout.line)
        for (index, value) in values.enumerated() { line.storeBytes(of: value, toByteOffset: index * 8, as: UInt64.self) }
    }

    /// A peer's publication (read after a barrier that followed its `publish`).
    func publication(of peer: Int, count: Int) -> [UInt64] {
        let line = UnsafeRawPointer(segments.addresses.publicationLine(of: peer))
        return (0..<count).map { line.load(fromByteOffset: $0 * 8, as: UInt64.self) }
    }

    // MARK: End

    /// Waits for every rank, then lets go of the peers' segments. Call once, at the end; after it
    /// no peer touches this rank's memory, so exiting is safe.
    public func finish() throws {
        guard !finished else { return }
        finished = true
        // Order matters: only after the last barrier may mappings of peers' memory go.
        try barrier()
        buffers.detachPeerBuffers()
        segments.leave()
    }
}
