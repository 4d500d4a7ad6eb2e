import XPMEM
import XPMEMSystem

/// Every rank's control segment, mapped in this process: this rank's own, exported and published
/// through the `Rendezvous`, and each peer's, found there and attached. Which of them the broker
/// released (their rank gone) is tracked in `departed`.
final class ControlSegments {
    let addresses: ControlAddresses
    let departed: PeerWatch
    private let rank: Int
    private let own: ExportedSegment
    private let rendezvous: Rendezvous
    /// Peers' control segments (nil at this rank's own index, and for every peer after `leave`).
    private var peers: [Attachment?]

    /// Exports this rank's control segment, publishes its id, and attaches every peer's, waiting up
    /// to `timeout` for each to appear.
    init(broker: XPMEMBroker, job: JobEnvironment, timeout: Duration) throws {
        let layout = ControlLayout(size: job.size)
        rank = job.rank
        rendezvous = Rendezvous(directory: job.rendezvousDirectory)
        do {
            own = try broker.makeSegment(size: layout.segmentSize, name: "comm rank \(job.rank)")
        } catch {
            throw CommunicatorError.broker(error)
        }
        let ownBase = own.bytes.baseAddress!
        SharedWord(ownBase).store(ControlLayout.magic)
        try rendezvous.publish(own.id, rank: job.rank)

        var peers: [Attachment?] = Array(repeating: nil, count: job.size)
        let deadline = SharedMemoryAccess.monotonicNanoseconds() + UInt64(timeout.components.seconds) * 1_000_000_000
        let departed = PeerWatch()
        self.departed = departed
        for peer in 0..<job.size where peer != job.rank {
            peers[peer] = try Self.attachControlSegment(of: peer, rendezvous: rendezvous, broker: broker,
                                                        layout: layout, deadline: deadline,
                                                        onRelease: { departed.mark(peer) })
        }
        self.peers = peers
        addresses = ControlAddresses(layout: layout, bases: (0..<job.size).map { peer in
            peer == job.rank ? ownBase : peers[peer]!.bytes.baseAddress!
        })
    }

    private static func attachControlSegment(
        of peer: Int, rendezvous: Rendezvous, broker: XPMEMBroker, layout: ControlLayout, deadline: UInt64,
        onRelease: @escaping @Sendable () -> Void
    ) throws -> Attachment {
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
                }
            }
            ThisProcess.sleep(microseconds: 1_000)
        }
        throw CommunicatorError.rendezvousTimedOut(rank: peer, path: rendezvous.path(of: peer))
    }

    /// Removes this rank's rendezvous file; call once every peer has attached (after the first barrier).
    func withdrawFromRendezvous() { rendezvous.withdraw(rank: rank) }

    /// Lets go of the peers' segments and, for the last rank out, the rendezvous directory. Call only
    /// once no peer will touch this rank's memory again (after a final barrier).
    func leave() {
        for index in peers.indices {
            try? peers[index]?.detach()
            peers[index] = nil
        }
        // Fails while other ranks' files remain; the last one out removes it.
        FileSystem.removeEmptyDirectory(rendezvous.directory)
    }
}
