/// Lets through at most `burst` messages of one kind per `interval`, and counts the rest, so that a
/// condition that repeats on every wake-up (a failing `accept`, a flood of refused clients) cannot
/// fill the disk with log lines.
struct LogThrottle {
    let burst: Int
    let interval: UInt64
    private var windowStart: UInt64 = 0
    private var passed = 0
    private var suppressed = 0

    /// - Parameter interval: microseconds.
    init(burst: Int = 5, interval: UInt64 = 60_000_000) {
        self.burst = burst
        self.interval = interval
    }

    /// Whether to log now; when a new window opens, also how many were suppressed in the last one.
    mutating func admit(now: UInt64) -> (log: Bool, suppressedBefore: Int) {
        var reported = 0
        if now &- windowStart >= interval {
            reported = suppressed
            windowStart = now
            passed = 0
            suppressed = 0
        }
        guard passed < burst else {
            suppressed += 1
            return (false, 0)
        }
        passed += 1
        return (true, reported)
    }
}
