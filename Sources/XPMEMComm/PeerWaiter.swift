/// Waits for a condition another rank makes true (a store into this rank's segment), giving up if that
/// rank has gone.
struct PeerWaiter {
    let departed: PeerWatch

    /// Waits until `condition` holds, spinning, then yielding, then sleeping (see `Backoff`). Past
    /// the spinning phase it checks whether `peer` (or any peer, for nil) has gone, re-testing the
    /// condition first: a peer that finished may legitimately have gone after its last store.
    func wait(for peer: Int?, until condition: () -> Bool) throws(CommunicatorError) {
        var backoff = Backoff()
        while !condition() {
            backoff.pause()
            if backoff.isPastSpinning, let gone = departed.first(among: peer), !condition() {
                throw .peerGone(rank: gone)
            }
        }
    }
}
