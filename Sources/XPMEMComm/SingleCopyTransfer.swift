import XPMEM

/// Messages the receiver copies straight out of the sender's `SharedBuffer`: the sender puts only
/// (segment, offset) in a ring slot and waits; the receiver copies from its cached attachment of that
/// segment, then counts the copy in the sender's acknowledgement word for it, which lets the sender go.
struct SingleCopyTransfer {
    let rank: Int
    let rings: MessageRings
    let buffers: SharedBuffers
    /// Per destination: single-copy messages sent (the acknowledgement to wait for).
    private let sentTo: PeerCounters
    /// Single-copy messages this rank sent.
    private let sent = PeerCounters(peers: 1)

    let cooperation: CooperativeCopy
    private let copier: MessageCopy

    init(rank: Int, size: Int, rings: MessageRings, buffers: SharedBuffers, cooperativeThreshold: Int, copier: MessageCopy) {
        self.rank = rank
        self.rings = rings
        self.buffers = buffers
        self.copier = copier
        sentTo = PeerCounters(peers: size)
        cooperation = CooperativeCopy(rank: rank, size: size, addresses: rings.addresses, buffers: buffers,
                                      waiter: rings.waiter, threshold: cooperativeThreshold, copier: copier)
    }

    var messagesSent: Int { Int(sent[0]) }

    private var addresses: ControlAddresses { rings.addresses }

    /// Sends `bytes`, which lie at `source` (a segment of this rank's and an offset in it), and returns
    /// once the receiver has copied them; meanwhile copies the part of them the receiver asks for.
    func send(_ bytes: UnsafeRawBufferPointer, at source: (id: SegmentID, offset: Int), to destination: Int, tag: Int)
        throws(CommunicatorError)
    {
        let length = bytes.count
        sent[0] += 1
        let slot = try rings.claimSlot(to: destination)
        SlotHeader(kind: .singleCopy, fragmentBytes: 16, tag: tag, totalLength: length).write(to: slot)
        slot.storeBytes(of: source.id.rawValue, toByteOffset: ControlLayout.slotHeader, as: UInt64.self)
        slot.storeBytes(of: UInt64(source.offset), toByteOffset: ControlLayout.slotHeader + 8, as: UInt64.self)
        rings.publish(slot, to: destination)
        sentTo[destination] += 1
        let expected = sentTo[destination]
        let acknowledged = addresses.word(of: rank, at: addresses.layout.acknowledgedOffset(of: destination))
        try rings.waiter.wait(for: destination) {
            acknowledged.load() >= expected || (cooperation.serve(destination, sending: bytes) && acknowledged.load() >= expected)
        }
    }

    /// Copies the `length` bytes that the single-copy message in `slot` describes into `buffer` (which
    /// holds them: the caller checked), releases the slot and acknowledges the copy to `source`.
    func receive(_ length: Int, describedIn slot: UnsafeMutableRawPointer, from source: Int,
                 into buffer: UnsafeMutableRawBufferPointer) throws(CommunicatorError)
    {
        let id = SegmentID(rawValue: slot.load(fromByteOffset: ControlLayout.slotHeader, as: UInt64.self))
        let offset = Int(slot.load(fromByteOffset: ControlLayout.slotHeader + 8, as: UInt64.self))
        rings.release(from: source)
        let mapped = try buffers.peerBytes(of: id)
        guard offset >= 0, offset + length <= mapped.count else {
            throw .truncated(source: source, length: offset + length, capacity: mapped.count)
        }
        if length > 0, try !cooperation.receive(length, from: mapped.baseAddress! + offset, of: source, into: buffer) {
            copier.copy(to: buffer.baseAddress!, from: mapped.baseAddress! + offset, byteCount: length, ofMessage: length)
        }
        addresses.word(of: source, at: addresses.layout.acknowledgedOffset(of: rank)).add(1)
    }

    /// Frees the counters; call once, when the communicator goes.
    func deallocate() {
        cooperation.deallocate()
        sentTo.deallocate()
        sent.deallocate()
    }
}
