import Synchronization
import Testing
@testable import XPMEM

/// How an exporter waits for an invalidation's reply: it polls only where the importers the last
/// invalidation reached are fewer than the cores (they would otherwise need the core it polls on).
@Suite("Invalidation reply wait")
struct InvalidationReplyWaitTests {
    @Test("before the first invalidation, and with as many importers as cores or more, the exporter sleeps")
    func sleepsWhenImportersFillTheCores() {
        #expect(BrokerChannel.ReplyWait.forInvalidation(lastImporters: nil, cores: 2) == .sleep)
        #expect(BrokerChannel.ReplyWait.forInvalidation(lastImporters: 2, cores: 2) == .sleep)
        #expect(BrokerChannel.ReplyWait.forInvalidation(lastImporters: 64, cores: 8) == .sleep)
    }

    @Test("with fewer importers than cores, the exporter polls for the reply")
    func pollsWhenACoreIsSpare() {
        #expect(BrokerChannel.ReplyWait.forInvalidation(lastImporters: 0, cores: 2) == .pollThenSleep)
        #expect(BrokerChannel.ReplyWait.forInvalidation(lastImporters: 1, cores: 2) == .pollThenSleep)
        #expect(BrokerChannel.ReplyWait.forInvalidation(lastImporters: 7, cores: 8) == .pollThenSleep)
    }

    @Test("a segment remembers how many importers its last invalidation reached")
    func segmentRemembersTheLastCount() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        #expect(segment.replyWaitForInvalidation() == .sleep)
        let report = try segment.invalidate(deadline: .seconds(10))
        #expect(report.importers.isEmpty)
        #expect(segment.state.withLock { $0.lastInvalidationImporters } == 0)
        #expect(segment.replyWaitForInvalidation() == .pollThenSleep)
    }
}
