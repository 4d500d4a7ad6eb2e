import SystemPackage

/// Moves again, a few times with a growing pause, the pages a migration left behind because they were
/// busy at that instant.
///
/// Under load the kernel gives up on a page another process is touching at that moment: it cannot take
/// it off its LRU list (`EBUSY`), or migration keeps finding an extra reference and, after its own quick
/// retries, leaves it (`mbind` then just leaves the page behind; `move_pages` returns without that
/// page's status, or `EAGAIN`). A millisecond later the page is usually free: in the emulated 4-node
/// machine, 1 page of 4096 stayed behind a `MOVE_ALL` while the migrate example ran. Pages refused for
/// a lasting reason — mapped by another process on the unprivileged path (`EACCES`), no memory on the
/// node (`ENOMEM`), not mapped (`ENOENT`, `EFAULT`) — are not retried: waiting would not change that.
public struct PageMoveRetry: Sendable, Equatable {
    /// At most this many rounds; each round retries every page still worth retrying, in one call.
    public var maximumRounds: Int
    /// The pause before the first round; each later round waits twice as long as the one before.
    public var firstPause: Duration

    /// By default four rounds after pauses of 1, 2, 4 and 8 ms: at most 15 ms of waiting, and only when
    /// a page was left behind.
    public init(maximumRounds: Int = 4, firstPause: Duration = .milliseconds(1)) {
        self.maximumRounds = maximumRounds
        self.firstPause = firstPause
    }

    /// What the retries did.
    public struct Outcome: Sendable, Equatable {
        /// Rounds run (0 when nothing was worth retrying).
        public var rounds: Int
        /// Distinct pages tried again.
        public var pagesRetried: Int
        /// Every page that was left behind, by index, with its last status: `.node(target)` for the
        /// ones a retry moved.
        public var statuses: [Int: PageStatus]

        public init(rounds: Int = 0, pagesRetried: Int = 0, statuses: [Int: PageStatus] = [:]) {
            self.rounds = rounds
            self.pagesRetried = pagesRetried
            self.statuses = statuses
        }

        /// The pages still not on `node`.
        public func leftBehind(on node: Int) -> [Int: PageStatus] { statuses.filter { $0.value != .node(node) } }
    }

    /// Whether trying again may move a page: it was left elsewhere with no reason given, or the kernel
    /// said it was busy, or gave no status.
    public static func isWorthRetrying(_ status: PageStatus, towards node: Int) -> Bool {
        switch status {
        case .node(let current): current != node
        case .failed(let errno): errno == .resourceBusy || errno == .resourceTemporarilyUnavailable
        case .unreported: true
        }
    }

    /// Retries the pages of `leftBehind` (index → how the first move left it) that are worth it.
    /// A round whose call fails as a whole ends the retries, and its pages keep that error as status.
    /// - Parameter pause: waits between rounds; tests pass one that records instead of sleeping.
    public func moveLeftBehind(
        _ leftBehind: [Int: PageStatus], to node: Int, using source: some PageStatusSource,
        pause: (Duration) -> Void = { ThisProcess.sleep(microseconds: Int($0 / .microseconds(1))) }
    ) -> Outcome {
        var outcome = Outcome(statuses: leftBehind)
        var pending = leftBehind.filter { Self.isWorthRetrying($0.value, towards: node) }.keys.sorted()
        var retried = Set<Int>()
        var nextPause = firstPause
        while !pending.isEmpty && outcome.rounds < maximumRounds {
            pause(nextPause)
            nextPause *= 2
            outcome.rounds += 1
            retried.formUnion(pending)
            let statuses: [PageStatus]
            do {
                statuses = try source.move(pages: pending, to: node)
            } catch {
                for page in pending { outcome.statuses[page] = .failed(error) }
                break
            }
            precondition(statuses.count == pending.count, "one status per page asked about")
            for (page, status) in zip(pending, statuses) { outcome.statuses[page] = status }
            pending = zip(pending, statuses).filter { Self.isWorthRetrying($0.1, towards: node) }.map(\.0)
        }
        outcome.pagesRetried = retried.count
        return outcome
    }
}
