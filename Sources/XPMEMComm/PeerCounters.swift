/// One counter per peer, in memory the communicator allocates once.
///
/// The message path reads and bumps these on every send and receive. As arrays stored in the
/// communicator (a class) each access paid Swift's dynamic exclusivity check (`swift_beginAccess`,
/// ~9% of an 8-byte ping-pong in `perf`); a fixed buffer behind a `let` pays none. Only the rank's
/// own thread touches them.
struct PeerCounters: @unchecked Sendable {
    private let values: UnsafeMutableBufferPointer<UInt64>

    init(peers: Int) {
        values = .allocate(capacity: max(peers, 1))
        values.initialize(repeating: 0)
    }

    subscript(peer: Int) -> UInt64 {
        get { values[peer] }
        nonmutating set { values[peer] = newValue }
    }

    /// Frees the memory; call once, when the owner goes.
    func deallocate() { values.deallocate() }
}
