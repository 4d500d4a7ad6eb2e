import XPMEMSystem

/// How long a polling raw peer or relay spins for its next message before it sleeps.
enum RawPeerSpin {
    static let microseconds = 1000

    /// Whether a polled reference of `processes` spinning processes can be the faster one: with more
    /// than two per core they mostly spin while the one with a message waits for a core (measured
    /// here: 6.5 ms per round with 8 peers, 58 ms with 64, against 0.3 and 1.9 ms sleeping), so
    /// it is not measured at all.
    static func worthPolling(_ processes: Int) -> Bool { processes <= 2 * ThisProcess.onlineProcessors }

    /// Waits until `processes` spinning peers have all gone to sleep: they share the machine's cores
    /// with whatever runs next, and 64 of them spinning a millisecond each would slow the next batch
    /// (ours or the other reference) by tens of milliseconds.
    static func waitForQuiet(after processes: Int) {
        guard processes > 0 else { return }
        let cores = ThisProcess.onlineProcessors
        let microseconds = (processes + cores - 1) / cores * microseconds + 2_000
        ThisProcess.sleep(microseconds: microseconds)
    }
}
