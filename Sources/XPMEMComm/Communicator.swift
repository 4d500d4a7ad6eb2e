import Synchronization
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
public final class Communicator {
    public let rank: Int
    public let size: Int
    public let launcher: String
    /// Messages at least this long, sent from a `SharedBuffer`, go single-copy
    /// (`XPMEM_COMM_SINGLE_COPY_BYTES` overrides the default).
    public var singleCopyThreshold: Int

    let broker: XPMEMBroker
    let exports = ExportRegistry()
    let imports: ImportCache
    private let layout: ControlLayout
    private let ownSegment: ExportedSegment
    private let rendezvous: Rendezvous
    /// Peers' control segments (nil at this rank's own index).
    private var peerAttachments: [Attachment?]
    /// Base of every rank's control segment as mapped here (this rank's own segment at its index).
    private let controlBases: [UnsafeMutableRawPointer]
    private let departed: PeerWatch
    /// Per peer: the next message number to send, the last count of consumed slots seen, the next
    /// message number to receive, and single-copy messages sent.
    private let nextSend: PeerCounters
    private let knownConsumed: PeerCounters
    private let nextReceive: PeerCounters
    private let singleCopiesSent: PeerCounters
    private var barrierEpoch: UInt64 = 0
    private var finished = false
    /// Messages sent through the rings, and single-copy (kept like the peer counters: no
    /// exclusivity check on the message path).
    private let messageCounts = PeerCounters(peers: 2)
    public var eagerMessages: Int { Int(messageCounts[0]) }
    public var singleCopyMessages: Int { Int(messageCounts[1]) }

    /// Joins the job described by `environment` (default: this process's, see `JobEnvironment`).
    /// - Parameters:
    ///   - socketPath: the broker; nil means `$XPMEM_SOCKET`, else the per-user default.
    ///   - timeout: how long to wait for every peer to publish its control segment.
    public init(environment: JobEnvironment? = nil, socketPath: String? = nil,
                timeout: Duration = .seconds(60)) throws {
        let job = try environment ?? JobEnvironment.current()
        rank = job.rank
        size = job.size
        launcher = job.launcher
        singleCopyThreshold = ThisProcess.environment("XPMEM_COMM_SINGLE_COPY_BYTES").flatMap { Int($0) } ?? 16384
        layout = ControlLayout(size: job.size)
        rendezvous = Rendezvous(directory: job.rendezvousDirectory)
        do {
            broker = try XPMEMBroker.connect(socketPath: socketPath, name: "rank \(job.rank)")
            ownSegment = try broker.makeSegment(size: layout.segmentSize, name: "comm rank \(job.rank)")
        } catch {
            throw CommunicatorError.broker(error)
        }
        imports = ImportCache(broker: broker)
        let departed = PeerWatch()
        self.departed = departed
        let ownBase = ownSegment.bytes.baseAddress!
        SharedWord(ownBase).store(ControlLayout.magic)
        try rendezvous.publish(ownSegment.id, rank: job.rank)

        var attachments: [Attachment?] = Array(repeating: nil, count: job.size)
        let deadline = SharedMemoryAccess.monotonicNanoseconds() + UInt64(timeout.components.seconds) * 1_000_000_000
        for peer in 0..<job.size where peer != job.rank {
            attachments[peer] = try Self.attachControlSegment(of: peer, rendezvous: rendezvous, broker: broker,
                                                              layout: layout, deadline: deadline,
                                                              onRelease: { departed.mark(peer) })
        }
        peerAttachments = attachments
        controlBases = (0..<job.size).map { peer in
            peer == job.rank ? ownBase : attachments[peer]!.bytes.baseAddress!
        }
        nextSend = PeerCounters(peers: job.size)
        knownConsumed = PeerCounters(peers: job.size)
        nextReceive = PeerCounters(peers: job.size)
        singleCopiesSent = PeerCounters(peers: job.size)
        // Everyone has attached everyone once all arrive: the rendezvous files are no longer needed.
        try barrier()
        rendezvous.withdraw(rank: rank)
    }

    deinit {
        for counters in [nextSend, knownConsumed, nextReceive, singleCopiesSent, messageCounts] { counters.deallocate() }
    }

    private static func attachControlSegment(
        of peer: Int, rendezvous: Rendezvous, broker: XPMEMBroker, layout: ControlLayout, deadline: UInt64,
        onRelease: @escaping @Sendable () -> Void
    ) throws -> Attachment {
        var lastError: (any Error)?
        while SharedMemoryAccess.monotonicNanoseconds() < deadline {
            if let id = rendezvous.read(rank: peer) {
                do {
                    let grant = try broker.get(id, access: .readWrite)
                    guard grant.size >= layout.segmentSize else {
                        throw CommunicatorError.missingEnvironment(
                            "rank \(peer)'s segment has \(grant.size) bytes, not \(layout.segmentSize): ranks disagree on the job size")
                    }
                    let attachment = try grant.attach(
                        policy: .block, handlers: InvalidationHandlers(released: { _, _ in onRelease() }))
                    if SharedWord(attachment.bytes.baseAddress!).load() == ControlLayout.magic { return attachment }
                } catch let error as CommunicatorError {
                    throw error
                } catch {
                    // A file left by an earlier job names a segment that is gone: wait for the new one.
                    lastError = error
                }
            }
            ThisProcess.sleep(microseconds: 1_000)
        }
        _ = lastError
        throw CommunicatorError.rendezvousTimedOut(rank: peer, path: rendezvous.path(of: peer))
    }

    // MARK: Addresses

    private func word(of owner: Int, at offset: Int) -> SharedWord { SharedWord(controlBases[owner] + offset) }
    /// The ring carrying messages from `sender` to `receiver`, through this rank's mapping.
    private func ring(from sender: Int, to receiver: Int) -> MessageRing {
        MessageRing(base: controlBases[receiver] + layout.ringOffset(from: sender), layout: layout)
    }

    private func checkPeer(_ peer: Int) throws(CommunicatorError) {
        guard (0..<size).contains(peer), peer != rank else { throw .invalidRank(peer) }
    }

    /// Waits until `condition` holds, spinning, then yielding, then sleeping (see `Backoff`). Past
    /// the spinning phase it checks whether `peer` (or any peer, for nil) has gone, re-testing the
    /// condition first: a peer that finished may legitimately have gone after its last store.
    private func wait(for peer: Int?, until condition: () -> Bool) throws(CommunicatorError) {
        var backoff = Backoff()
        while !condition() {
            backoff.pause()
            if backoff.isPastSpinning, let gone = departed.first(among: peer), !condition() {
                throw .peerGone(rank: gone)
            }
        }
    }

    // MARK: Barrier

    /// Returns once every rank has called it as many times as this one. Each rank stores its epoch
    /// into every peer's segment, then polls its own.
    public func barrier() throws(CommunicatorError) {
        barrierEpoch += 1
        let epoch = barrierEpoch
        for peer in 0..<size where peer != rank {
            word(of: peer, at: layout.arrivalOffset(of: rank)).store(epoch)
        }
        for peer in 0..<size where peer != rank {
            let arrival = word(of: rank, at: layout.arrivalOffset(of: peer))
            try wait(for: nil) { arrival.load() >= epoch }
        }
    }

    // MARK: Point to point

    /// Sends `bytes` to rank `destination`. Returns when the bytes may be reused: at once for small
    /// messages (they were copied into the receiver's ring), after the receiver copied them for
    /// single-copy ones.
    public func send(_ bytes: UnsafeRawBufferPointer, to destination: Int, tag: Int = 0) throws(CommunicatorError) {
        try checkPeer(destination)
        if bytes.count >= singleCopyThreshold, let source = exports.locate(bytes) {
            try sendSingleCopy(source, length: bytes.count, to: destination, tag: tag)
            return
        }
        messageCounts[0] += 1
        var sent = 0
        repeat {
            let fragment = min(layout.slotPayload, bytes.count - sent)
            let slot = try claimSlot(to: destination)
            let kind: SlotKind = sent == 0 ? .eager : .continuation
            SlotHeader(kind: kind, fragmentBytes: fragment, tag: tag, totalLength: bytes.count).write(to: slot)
            if fragment > 0 {
                (slot + ControlLayout.slotHeader).copyMemory(from: bytes.baseAddress! + sent, byteCount: fragment)
            }
            publish(slot, to: destination)
            sent += fragment
        } while sent < bytes.count
    }

    private func sendSingleCopy(_ source: (id: SegmentID, offset: Int), length: Int, to destination: Int,
                                tag: Int) throws(CommunicatorError) {
        messageCounts[1] += 1
        let slot = try claimSlot(to: destination)
        SlotHeader(kind: .singleCopy, fragmentBytes: 16, tag: tag, totalLength: length).write(to: slot)
        slot.storeBytes(of: source.id.rawValue, toByteOffset: ControlLayout.slotHeader, as: UInt64.self)
        slot.storeBytes(of: UInt64(source.offset), toByteOffset: ControlLayout.slotHeader + 8, as: UInt64.self)
        publish(slot, to: destination)
        singleCopiesSent[destination] += 1
        let expected = singleCopiesSent[destination]
        let acknowledged = word(of: rank, at: layout.acknowledgedOffset(of: destination))
        try wait(for: destination) { acknowledged.load() >= expected }
    }

    /// The next free slot of the ring to `destination`, waiting while the ring is full.
    private func claimSlot(to destination: Int) throws(CommunicatorError) -> UnsafeMutableRawPointer {
        let ring = ring(from: rank, to: destination)
        let number = nextSend[destination]
        let slotCount = UInt64(layout.slotCount)
        if number - knownConsumed[destination] >= slotCount {
            var consumed = knownConsumed[destination]
            try wait(for: destination) {
                consumed = ring.consumed.load()
                return number - consumed < slotCount
            }
            knownConsumed[destination] = consumed
        }
        return ring.slot(number)
    }

    /// Makes the slot visible: the release store of its sequence publishes header and payload.
    private func publish(_ slot: UnsafeMutableRawPointer, to destination: Int) {
        let number = nextSend[destination]
        nextSend[destination] = number + 1
        SharedWord(slot).store(number + 1)
    }

    /// Receives the next message from `source` into `buffer` and returns its length.
    /// - Throws: `tagMismatch` if that message has another tag, `truncated` if it does not fit (in
    ///   both cases it stays queued).
    @discardableResult
    public func receive(into buffer: UnsafeMutableRawBufferPointer, from source: Int, tag: Int = 0) throws
        -> Int
    {
        try checkPeer(source)
        let ring = ring(from: source, to: rank)
        var number = nextReceive[source]
        var slot = ring.slot(number)
        try waitForSlot(slot, number: number, from: source)
        let header = SlotHeader(readingFrom: slot)
        let length = Int(header.totalLength)
        guard header.tag == Int64(tag) else {
            throw CommunicatorError.tagMismatch(source: source, expected: tag, found: Int(header.tag))
        }
        guard length <= buffer.count else {
            throw CommunicatorError.truncated(source: source, length: length, capacity: buffer.count)
        }
        if header.kind == SlotKind.singleCopy.rawValue {
            let id = SegmentID(rawValue: slot.load(fromByteOffset: ControlLayout.slotHeader, as: UInt64.self))
            let offset = Int(slot.load(fromByteOffset: ControlLayout.slotHeader + 8, as: UInt64.self))
            release(ring, number: number, from: source)
            let mapped: UnsafeMutableRawBufferPointer
            do {
                mapped = try imports.bytes(of: id)
            } catch {
                throw CommunicatorError.broker(error)
            }
            guard offset >= 0, offset + length <= mapped.count else {
                throw CommunicatorError.truncated(source: source, length: offset + length, capacity: mapped.count)
            }
            if length > 0 { buffer.baseAddress!.copyMemory(from: mapped.baseAddress! + offset, byteCount: length) }
            word(of: source, at: layout.acknowledgedOffset(of: rank)).add(1)
            return length
        }
        var received = 0
        while true {
            let fragment = Int(slot.load(fromByteOffset: 12, as: UInt32.self))
            if fragment > 0 {
                (buffer.baseAddress! + received).copyMemory(from: slot + ControlLayout.slotHeader, byteCount: fragment)
            }
            received += fragment
            release(ring, number: number, from: source)
            if received >= length { return length }
            number += 1
            slot = ring.slot(number)
            try waitForSlot(slot, number: number, from: source)
        }
    }

    private func waitForSlot(_ slot: UnsafeMutableRawPointer, number: UInt64, from source: Int) throws(CommunicatorError) {
        let sequence = SharedWord(slot)
        try wait(for: source) { sequence.load() == number + 1 }
    }

    /// Hands the slot back to the sender.
    private func release(_ ring: MessageRing, number: UInt64, from source: Int) {
        nextReceive[source] = number + 1
        ring.consumed.store(number + 1)
    }

    // MARK: Buffers

    /// Allocates `byteCount` bytes (rounded up to whole pages) of memory peers can copy from directly.
    /// `placement` puts its pages on NUMA nodes (see `Placement`).
    public func allocate(byteCount: Int, placement: Placement = .firstTouch) throws -> SharedBuffer {
        let segment: ExportedSegment
        do {
            segment = try broker.makeSegment(size: max(byteCount, 1), name: "comm buffer rank \(rank)",
                                             placement: placement)
        } catch {
            throw CommunicatorError.broker(error)
        }
        let buffer = SharedBuffer(segment: segment, owner: self)
        exports.add(buffer)
        return buffer
    }

    /// The bytes of another rank's `SharedBuffer` (by its `segmentID`), mapped here with the `.block`
    /// policy through the attachment cache: accesses during an invalidation (a migration, say)
    /// sleep until it ends. Valid until that rank frees the buffer.
    public func sharedBytes(of segment: SegmentID) throws -> UnsafeMutableRawBufferPointer {
        do {
            return try imports.bytes(of: segment)
        } catch {
            throw CommunicatorError.broker(error)
        }
    }

    /// How the single-copy receive side's attachment cache has fared.
    public var attachmentCache: AttachmentCacheStatistics { imports.statistics }

    // MARK: Collectives support

    /// This rank's publication line: where it announces its buffers to a collective.
    func publish(_ values: [UInt64]) {
        let line = controlBases[rank] + layout.publicationOffset
        precondition(values.count * 8 <= ControlLayout.line)
        for (index, value) in values.enumerated() { line.storeBytes(of: value, toByteOffset: index * 8, as: UInt64.self) }
    }

    /// A peer's publication (read after a barrier that followed its `publish`).
    func publication(of peer: Int, count: Int) -> [UInt64] {
        let line = UnsafeRawPointer(controlBases[peer] + layout.publicationOffset)
        return (0..<count).map { line.load(fromByteOffset: $0 * 8, as: UInt64.self) }
    }

    // MARK: End

    /// Waits for every rank, then lets go of the peers' segments. Call once, at the end; after it
    /// no peer touches this rank's memory, so exiting is safe.
    public func finish() throws {
        guard !finished else { return }
        finished = true
        try barrier()
        imports.removeAll()
        for index in peerAttachments.indices {
            try? peerAttachments[index]?.detach()
            peerAttachments[index] = nil
        }
        // Fails while other ranks' files remain; the last one out removes it.
        FileSystem.removeEmptyDirectory(rendezvous.directory)
    }
}

/// Which peers' control segments the broker released (the peer exited or disconnected), set from
/// the library's event thread and read by waiting ranks.
final class PeerWatch: Sendable {
    private let gone = Mutex<Set<Int>>([])
    func mark(_ peer: Int) { _ = gone.withLock { $0.insert(peer) } }
    /// `peer` if it is gone; for nil, any gone peer.
    func first(among peer: Int?) -> Int? {
        gone.withLock { gone in
            if let peer { return gone.contains(peer) ? peer : nil }
            return gone.min()
        }
    }
}
