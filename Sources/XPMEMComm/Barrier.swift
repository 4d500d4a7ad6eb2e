/// The ranks' barrier: returns once every rank has entered it as many times as this one. Each rank
/// stores its epoch into its arrival word in every peer's segment, then polls the peers' arrival words
/// in its own (a rank only ever polls its own segment; see `ControlLayout`).
struct Barrier {
    let rank: Int
    let size: Int
    let addresses: ControlAddresses
    let waiter: PeerWaiter
    /// Barriers this rank has entered (one counter, kept like the message path's).
    private let epoch = PeerCounters(peers: 1)

    init(rank: Int, size: Int, addresses: ControlAddresses, waiter: PeerWaiter) {
        self.rank = rank
        self.size = size
        self.addresses = addresses
        self.waiter = waiter
    }

    func wait() throws(CommunicatorError) {
        epoch[0] += 1
        let current = epoch[0]
        let layout = addresses.layout
        for peer in 0..<size where peer != rank {
            addresses.word(of: peer, at: layout.arrivalOffset(of: rank)).store(current)
        }
        for peer in 0..<size where peer != rank {
            let arrival = addresses.word(of: rank, at: layout.arrivalOffset(of: peer))
            try waiter.wait(for: nil) { arrival.load() >= current }
        }
    }

    /// Frees the counter; call once, when the communicator goes.
    func deallocate() { epoch.deallocate() }
}
