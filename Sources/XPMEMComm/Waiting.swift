import XPMEMSystem

/// How a rank waits for another: busy-poll first, because a cross-core wake-up through the kernel
/// costs ~30 µs here while a poll sees a store in well under one; then `sched_yield`, because with
/// more busy ranks than cores a spinning rank would steal the very core the rank it waits for needs;
/// then short sleeps, so that a long wait (a peer doing serial work) costs no CPU.
struct Backoff {
    /// Polls without giving up the core (a few microseconds of spinning).
    static let spinRounds = 2_000
    /// Then polls with a `sched_yield` between reads (cheap when nobody else wants the core).
    static let yieldRounds = 20_000
    private var rounds = 0

    /// True once past the spinning phase: the moment to check slow conditions (a peer's death).
    var isPastSpinning: Bool { rounds > Backoff.spinRounds }

    mutating func pause() {
        rounds += 1
        if rounds <= Backoff.spinRounds { return }
        if rounds <= Backoff.spinRounds + Backoff.yieldRounds {
            ThisProcess.yieldProcessor()
        } else {
            ThisProcess.sleep(microseconds: 20)
        }
    }
}
