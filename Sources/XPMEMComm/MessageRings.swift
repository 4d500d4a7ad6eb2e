/// The rings between this rank and its peers, and the messages copied through them (eager): the
/// sending side claims a slot in the receiver's ring (waiting while the ring is full), fills it and
/// publishes it; the receiving side waits for its next slot, copies it out and hands it back.
/// Single-copy messages travel in slots too (`SingleCopyTransfer`), carrying only where the bytes are.
struct MessageRings {
    let rank: Int
    let addresses: ControlAddresses
    let waiter: PeerWaiter
    /// Per peer: the next message number to send, the last count of consumed slots seen, and the next
    /// message number to receive.
    private let nextSend: PeerCounters
    private let knownConsumed: PeerCounters
    private let nextReceive: PeerCounters
    /// Messages this rank sent eagerly.
    private let sent = PeerCounters(peers: 1)

    init(rank: Int, size: Int, addresses: ControlAddresses, waiter: PeerWaiter) {
        self.rank = rank
        self.addresses = addresses
        self.waiter = waiter
        nextSend = PeerCounters(peers: size)
        knownConsumed = PeerCounters(peers: size)
        nextReceive = PeerCounters(peers: size)
    }

    var messagesSent: Int { Int(sent[0]) }

    private var layout: ControlLayout { addresses.layout }

    // MARK: Sending

    /// Copies `bytes` into the ring to `destination`, one slot per fragment.
    func send(_ bytes: UnsafeRawBufferPointer, to destination: Int, tag: Int) throws(CommunicatorError) {
        sent[0] += 1
        var copied = 0
        repeat {
            let fragment = min(layout.slotPayload, bytes.count - copied)
            let slot = try claimSlot(to: destination)
            let kind: SlotKind = copied == 0 ? .eager : .continuation
            SlotHeader(kind: kind, fragmentBytes: fragment, tag: tag, totalLength: bytes.count).write(to: slot)
            if fragment > 0 {
                (slot + ControlLayout.slotHeader).copyMemory(from: bytes.baseAddress! + copied, byteCount: fragment)
            }
            publish(slot, to: destination)
            copied += fragment
        } while copied < bytes.count
    }

    /// The next free slot of the ring to `destination`, waiting while the ring is full.
    func claimSlot(to destination: Int) throws(CommunicatorError) -> UnsafeMutableRawPointer {
        let ring = addresses.ring(from: rank, to: destination)
        let number = nextSend[destination]
        let slotCount = UInt64(layout.slotCount)
        if number - knownConsumed[destination] >= slotCount {
            var consumed = knownConsumed[destination]
            try waiter.wait(for: destination) {
                consumed = ring.consumed.load()
                return number - consumed < slotCount
            }
            knownConsumed[destination] = consumed
        }
        return ring.slot(number)
    }

    /// Makes the claimed slot visible: the release store of its sequence publishes header and payload.
    func publish(_ slot: UnsafeMutableRawPointer, to destination: Int) {
        let number = nextSend[destination]
        nextSend[destination] = number + 1
        SharedWord(slot).store(number + 1)
    }

    // MARK: Receiving

    /// The slot holding the next message (or fragment) from `source`, once it has arrived.
    func nextSlot(from source: Int) throws(CommunicatorError) -> UnsafeMutableRawPointer {
        let number = nextReceive[source]
        let slot = addresses.ring(from: source, to: rank).slot(number)
        let sequence = SharedWord(slot)
        try waiter.wait(for: source) { sequence.load() == number + 1 }
        return slot
    }

    /// Hands the slot `nextSlot` returned back to the sender.
    func release(from source: Int) {
        let number = nextReceive[source]
        nextReceive[source] = number + 1
        addresses.ring(from: source, to: rank).consumed.store(number + 1)
    }

    /// Copies an eager message of `length` bytes, whose first fragment is in `slot`, into `buffer`
    /// (which holds it: the caller checked), releasing each slot as it goes.
    func receive(_ length: Int, startingAt slot: UnsafeMutableRawPointer, from source: Int,
                 into buffer: UnsafeMutableRawBufferPointer) throws(CommunicatorError)
    {
        var slot = slot
        var received = 0
        while true {
            let fragment = SlotHeader.fragmentBytes(in: slot)
            if fragment > 0 {
                (buffer.baseAddress! + received).copyMemory(from: slot + ControlLayout.slotHeader, byteCount: fragment)
            }
            received += fragment
            release(from: source)
            if received >= length { return }
            slot = try nextSlot(from: source)
        }
    }

    /// Frees the counters; call once, when the communicator goes.
    func deallocate() {
        for counters in [nextSend, knownConsumed, nextReceive, sent] { counters.deallocate() }
    }
}
