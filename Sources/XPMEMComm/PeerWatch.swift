import Synchronization

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
