import SystemPackage
import Testing
@testable import XPMEMSystem

/// Answers each round of retries from a script, and records which pages each round asked about.
final class ScriptedPageSource: PageStatusSource {
    private var rounds: [Result<[PageStatus], Errno>]
    private(set) var asked: [[Int]] = []

    init(_ rounds: [Result<[PageStatus], Errno>]) { self.rounds = rounds }

    func move(pages indexes: [Int], to node: Int) throws(Errno) -> [PageStatus] {
        asked.append(indexes)
        guard !rounds.isEmpty else { return indexes.map { _ in .failed(.resourceBusy) } }
        return try rounds.removeFirst().get()
    }
}

/// The retry policy for pages a migration left behind, with the kernel's answers scripted: no NUMA needed.
struct PageMoveRetryTests {
    /// Runs the default policy towards node 0 and records the pauses instead of sleeping.
    func retry(_ leftBehind: [Int: PageStatus], _ source: ScriptedPageSource, policy: PageMoveRetry = PageMoveRetry())
        -> (outcome: PageMoveRetry.Outcome, pauses: [Duration])
    {
        var pauses: [Duration] = []
        let outcome = policy.moveLeftBehind(leftBehind, to: 0, using: source, pause: { pauses.append($0) })
        return (outcome, pauses)
    }

    @Test func aPageBusyOnceMovesOnTheNextRoundAfterALongerPause() {
        let source = ScriptedPageSource([.success([.failed(.resourceBusy)]), .success([.node(0)])])
        let (outcome, pauses) = retry([5: .node(1)], source)
        #expect(source.asked == [[5], [5]])
        #expect(outcome.rounds == 2 && outcome.pagesRetried == 1)
        #expect(outcome.statuses == [5: .node(0)])
        #expect(outcome.leftBehind(on: 0).isEmpty)
        #expect(pauses == [.milliseconds(1), .milliseconds(2)])
    }

    @Test func eachRoundAsksOnlyAboutPagesStillWorthRetrying() {
        let source = ScriptedPageSource([
            .success([.node(0), .failed(.resourceTemporarilyUnavailable), .unreported]),
            .success([.node(0), .node(0)]),
        ])
        let (outcome, _) = retry([3: .node(1), 7: .node(1), 9: .node(2)], source)
        #expect(source.asked == [[3, 7, 9], [7, 9]])
        #expect(outcome.rounds == 2 && outcome.pagesRetried == 3)
        #expect(outcome.leftBehind(on: 0).isEmpty)
    }

    @Test func lastingRefusalsAreReportedWithoutWaitingForThem() {
        // EACCES: another process maps the page (unprivileged move); ENOENT: not mapped. Neither passes.
        let source = ScriptedPageSource([.success([.failed(.permissionDenied)])])
        let (outcome, pauses) = retry([1: .node(1), 2: .failed(.noSuchFileOrDirectory)], source)
        #expect(source.asked == [[1]])
        #expect(outcome.rounds == 1 && outcome.pagesRetried == 1 && pauses.count == 1)
        #expect(outcome.leftBehind(on: 0) == [1: .failed(.permissionDenied), 2: .failed(.noSuchFileOrDirectory)])
    }

    @Test func aPageBusyEveryTimeIsGivenUpAfterTheLastRound() {
        let source = ScriptedPageSource([])
        let (outcome, pauses) = retry([4: .node(1)], source)
        #expect(outcome.rounds == 4 && source.asked.count == 4)
        #expect(pauses == [.milliseconds(1), .milliseconds(2), .milliseconds(4), .milliseconds(8)])
        #expect(outcome.leftBehind(on: 0) == [4: .failed(.resourceBusy)])
    }

    @Test func nothingLeftBehindMeansNoRoundAndNoPause() {
        let source = ScriptedPageSource([])
        let (outcome, pauses) = retry([:], source)
        #expect(outcome == PageMoveRetry.Outcome())
        #expect(source.asked.isEmpty && pauses.isEmpty)
    }

    @Test func aCallThatFailsWholeEndsTheRetriesAndMarksItsPages() {
        let source = ScriptedPageSource([.failure(.noMemory)])
        let (outcome, _) = retry([6: .node(1), 8: .unreported], source)
        #expect(outcome.rounds == 1 && source.asked == [[6, 8]])
        #expect(outcome.leftBehind(on: 0) == [6: .failed(.noMemory), 8: .failed(.noMemory)])
    }

    @Test func roundsAndPausesFollowThePolicy() {
        let source = ScriptedPageSource([])
        let policy = PageMoveRetry(maximumRounds: 2, firstPause: .microseconds(250))
        let (outcome, pauses) = retry([0: .failed(.resourceBusy)], source, policy: policy)
        #expect(outcome.rounds == 2 && pauses == [.microseconds(250), .microseconds(500)])
        let none = retry([0: .failed(.resourceBusy)], ScriptedPageSource([]), policy: PageMoveRetry(maximumRounds: 0))
        #expect(none.outcome.rounds == 0 && none.outcome.pagesRetried == 0 && none.pauses.isEmpty)
    }

    @Test func transientStatusesAreTheOnlyOnesWorthRetrying() {
        #expect(PageMoveRetry.isWorthRetrying(.node(1), towards: 0))
        #expect(!PageMoveRetry.isWorthRetrying(.node(0), towards: 0))
        #expect(PageMoveRetry.isWorthRetrying(.failed(.resourceBusy), towards: 0))
        #expect(PageMoveRetry.isWorthRetrying(.failed(.resourceTemporarilyUnavailable), towards: 0))
        #expect(PageMoveRetry.isWorthRetrying(.unreported, towards: 0))
        for lasting: Errno in [.permissionDenied, .noMemory, .noSuchFileOrDirectory, .badAddress, .invalidArgument, .ioError] {
            #expect(!PageMoveRetry.isWorthRetrying(.failed(lasting), towards: 0), "\(lasting)")
        }
    }

    @Test func kernelStatusesDecode() {
        #expect(PageStatus(kernelStatus: 2) == .node(2))
        #expect(PageStatus(kernelStatus: -16) == .failed(.resourceBusy))
        #expect(PageStatus(kernelStatus: .min) == .unreported)
    }
}

/// `move_pages` and strict `mbind` on real memory, where the kernel has NUMA (one node is enough).
struct PageRangeTests {
    @Test(.enabled(if: NUMA.isAvailable, "the kernel has no NUMA support"))
    func pagesMovedToTheirOwnNodeReportThatNode() throws {
        let mapping = try MemoryMapping.anonymous(length: 4 * pageSize)
        mapping.bytes.initializeMemory(as: UInt8.self, repeating: 1)
        let pages = PageRange(base: mapping.base, length: mapping.length, pageSize: pageSize)
        let node = try #require(NUMA.nodes.first)
        #expect(try pages.move(pages: [0, 2, 3], to: node, moving: .ownPages) == Array(repeating: .node(node), count: 3))
        #expect(try pages.bind(to: node, moving: .ownPages))
        #expect(try pages.nodes(populate: false) == Array(repeating: Int32(node), count: 4))
    }

    @Test(.enabled(if: NUMA.isAvailable, "the kernel has no NUMA support"))
    func aNodeThatDoesNotExistIsRefused() throws {
        let mapping = try MemoryMapping.anonymous(length: pageSize)
        let pages = PageRange(base: mapping.base, length: mapping.length, pageSize: pageSize)
        #expect(throws: Errno.invalidArgument) { _ = try pages.move(pages: [0], to: 4095, moving: .ownPages) }
        #expect(throws: Errno.invalidArgument) { _ = try NUMA.movePages([mapping.base], to: 0, move: .none) }
    }
}
