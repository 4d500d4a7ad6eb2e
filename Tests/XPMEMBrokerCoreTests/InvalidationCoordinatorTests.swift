import Testing
import XPMEMBrokerCore
import XPMEMWire

/// The invalidation state machine on its own: no sockets, time passed in by hand.
struct InvalidationCoordinatorTests {
    let segment = SegmentID(rawValue: 0xA)
    let exporter = ClientID(rawValue: 1)
    let first = ClientID(rawValue: 2)
    let second = ClientID(rawValue: 3)

    func request(
        offset: UInt64 = 0, length: UInt64 = 8192, hold: Bool = true, requestID: UInt32 = 7, arrival: UInt64 = 0,
        deadline: UInt64 = 1_000_000
    ) -> InvalidationRequest {
        InvalidationRequest(segment: segment, offset: offset, length: length, reason: .reuse, holdForChange: hold,
                            requester: exporter, requestID: requestID, arrival: arrival, deadline: deadline)
    }

    func targets(_ clients: ClientID...) -> [InvalidationTarget] {
        clients.map { InvalidationTarget(client: $0, pid: Int32($0.rawValue) + 100, subscribed: true) }
    }

    /// The report in the effects' reply, if there is one.
    func report(in effects: [InvalidationEffect]) -> InvalidationReport? {
        for case .reply(_, _, .invalidated(let report)) in effects { return report }
        return nil
    }

    @Test func beginNotifiesEveryTargetAndMakesTheSequenceOdd() {
        var coordinator = InvalidationCoordinator()
        let effects = coordinator.submit(request(), targets: targets(first, second), now: 0)
        #expect(coordinator.sequence(of: segment) == 1)
        #expect(effects == [
            .notify(first, .invalidateBegin(segment, offset: 0, length: 8192, sequence: 1, reason: .reuse)),
            .notify(second, .invalidateBegin(segment, offset: 0, length: 8192, sequence: 1, reason: .reuse)),
        ])
        #expect(coordinator.blocksAccess(to: segment, offset: 4096, length: 4096))
        #expect(!coordinator.blocksAccess(to: segment, offset: 8192, length: 4096))
    }

    @Test func theReportComesOnlyWhenEveryImporterAcknowledged() throws {
        var coordinator = InvalidationCoordinator()
        _ = coordinator.submit(request(), targets: targets(first, second), now: 0)
        #expect(report(in: coordinator.acknowledge(segment, sequence: 1, from: first, now: 10)) == nil)
        let done = try #require(report(in: coordinator.acknowledge(segment, sequence: 1, from: second, now: 30)))
        #expect(done.importers.map(\.outcome) == [.acknowledged, .acknowledged])
        #expect(done.importers.map(\.elapsedMicroseconds) == [10, 30])
        #expect(done.sequence == 1)
        // Held for the change: the range stays blocked until the requester ends it.
        #expect(coordinator.blocksAccess(to: segment, offset: 0, length: 4096))
        let ended = try coordinator.end(segment, sequence: 1, by: exporter)
        #expect(ended.contains(.notify(first, .invalidateEnd(segment, offset: 0, length: 8192, sequence: 1))))
        #expect(ended.contains(.rangeReopened(segment)))
        #expect(coordinator.sequence(of: segment) == 2)
        #expect(!coordinator.blocksAccess(to: segment, offset: 0, length: 4096))
    }

    @Test func theAcknowledgementsAwaitedCountDownAndStopAtTheChange() {
        var coordinator = InvalidationCoordinator()
        #expect(coordinator.acknowledgementsAwaited == 0)
        _ = coordinator.submit(request(), targets: targets(first, second), now: 0)
        #expect(coordinator.acknowledgementsAwaited == 2)
        _ = coordinator.acknowledge(segment, sequence: 1, from: first, now: 10)
        _ = coordinator.acknowledge(segment, sequence: 1, from: first, now: 11)
        #expect(coordinator.acknowledgementsAwaited == 1, "a repeated acknowledgement counts once")
        _ = coordinator.acknowledge(segment, sequence: 1, from: second, now: 20)
        // Held for the change: in flight, but no importer is waited for any more.
        #expect(coordinator.inFlightCount == 1 && coordinator.acknowledgementsAwaited == 0)
    }

    @Test func staleAndForeignAcknowledgementsAreIgnored() {
        var coordinator = InvalidationCoordinator()
        _ = coordinator.submit(request(), targets: targets(first), now: 0)
        #expect(coordinator.acknowledge(segment, sequence: 3, from: first, now: 5).isEmpty)
        #expect(coordinator.acknowledge(segment, sequence: 1, from: second, now: 5).isEmpty)
        #expect(report(in: coordinator.acknowledge(segment, sequence: 1, from: first, now: 5)) != nil)
        #expect(coordinator.acknowledge(segment, sequence: 1, from: first, now: 6).isEmpty)
    }

    @Test func aDeadlineRevokesLaggardsAndStillReports() throws {
        var coordinator = InvalidationCoordinator()
        _ = coordinator.submit(request(deadline: 500), targets: targets(first, second), now: 0)
        _ = coordinator.acknowledge(segment, sequence: 1, from: first, now: 100)
        #expect(coordinator.nextDeadline == 500)
        #expect(coordinator.expire(now: 499).isEmpty)
        let effects = coordinator.expire(now: 500)
        #expect(effects.contains(.revokeGrants(second, segment)))
        let done = try #require(report(in: effects))
        #expect(done.importers.map(\.outcome) == [.acknowledged, .missedDeadline])
        #expect(done.anyMissedDeadline)
        #expect(coordinator.nextDeadline == nil)
        // Only the importer that acknowledged hears the end.
        let ended = try coordinator.end(segment, sequence: 1, by: exporter)
        #expect(ended.contains(.notify(first, .invalidateEnd(segment, offset: 0, length: 8192, sequence: 1))))
        #expect(!ended.contains(.notify(second, .invalidateEnd(segment, offset: 0, length: 8192, sequence: 1))))
    }

    @Test func anImporterThatLeavesCountsAsAcknowledged() throws {
        var coordinator = InvalidationCoordinator()
        _ = coordinator.submit(request(), targets: targets(first), now: 0)
        let done = try #require(report(in: coordinator.clientDeparted(first, now: 40)))
        #expect(done.importers.map(\.outcome) == [.exited])
    }

    @Test func anUnsubscribedImporterIsReportedWithoutWaiting() throws {
        var coordinator = InvalidationCoordinator()
        let silent = InvalidationTarget(client: first, pid: 1, subscribed: false)
        let done = try #require(report(in: coordinator.submit(request(), targets: [silent], now: 0)))
        #expect(done.importers.map(\.outcome) == [.notSubscribed])
    }

    @Test func anOperatorInvalidationEndsByItselfAndRepliesAfterTheEnd() throws {
        var coordinator = InvalidationCoordinator()
        _ = coordinator.submit(request(hold: false), targets: targets(first), now: 0)
        let effects = coordinator.acknowledge(segment, sequence: 1, from: first, now: 10)
        let endIndex = try #require(effects.firstIndex(of: .notify(first, .invalidateEnd(segment, offset: 0, length: 8192, sequence: 1))))
        let replyIndex = try #require(effects.firstIndex { if case .reply = $0 { true } else { false } })
        #expect(endIndex < replyIndex)
        #expect(coordinator.sequence(of: segment) == 2)
    }

    @Test func invalidationsOfOneSegmentRunOneAtATimeInOrder() throws {
        var coordinator = InvalidationCoordinator()
        _ = coordinator.submit(request(requestID: 1), targets: targets(first), now: 0)
        let second = request(offset: 4096, requestID: 2, arrival: 5)
        #expect(coordinator.submit(second, targets: targets(first), now: 5).isEmpty, "queued, nothing sent yet")
        _ = coordinator.acknowledge(segment, sequence: 1, from: first, now: 10)
        let ended = try coordinator.end(segment, sequence: 1, by: exporter)
        #expect(ended.last == .ready(second))
        let started = coordinator.start(second, targets: targets(first), now: 20)
        #expect(started == [.notify(first, .invalidateBegin(segment, offset: 4096, length: 8192, sequence: 3, reason: .reuse))])
    }

    @Test func differentSegmentsProceedInParallel() {
        var coordinator = InvalidationCoordinator()
        let other = SegmentID(rawValue: 0xB)
        _ = coordinator.submit(request(), targets: targets(first), now: 0)
        var parallel = request()
        parallel.segment = other
        let effects = coordinator.submit(parallel, targets: targets(first), now: 0)
        #expect(effects == [.notify(first, .invalidateBegin(other, offset: 0, length: 8192, sequence: 1, reason: .reuse))])
    }

    @Test func onlyTheRequesterMayEndAndOnlyAfterTheAcknowledgements() {
        var coordinator = InvalidationCoordinator()
        _ = coordinator.submit(request(), targets: targets(first), now: 0)
        #expect(throws: BrokerError.self) { try coordinator.end(segment, sequence: 1, by: exporter) }
        _ = coordinator.acknowledge(segment, sequence: 1, from: first, now: 1)
        #expect(throws: BrokerError.self) { try coordinator.end(segment, sequence: 1, by: second) }
        #expect(throws: BrokerError.self) { try coordinator.end(segment, sequence: 5, by: exporter) }
    }

    @Test func aRequesterThatLeavesEndsItsInvalidation() {
        var coordinator = InvalidationCoordinator()
        _ = coordinator.submit(request(), targets: targets(first), now: 0)
        _ = coordinator.acknowledge(segment, sequence: 1, from: first, now: 1)
        let effects = coordinator.clientDeparted(exporter, now: 2)
        #expect(effects.contains(.notify(first, .invalidateEnd(segment, offset: 0, length: 8192, sequence: 1))))
        #expect(!coordinator.blocksAccess(to: segment, offset: 0, length: 4096))
    }

    @Test func removingTheSegmentAbandonsWhatWasQueuedAndTellsWaiters() {
        var coordinator = InvalidationCoordinator()
        _ = coordinator.submit(request(requestID: 1), targets: targets(first), now: 0)
        _ = coordinator.submit(request(requestID: 2), targets: targets(first), now: 0)
        let effects = coordinator.segmentRemoved(segment)
        let failedRequests = effects.compactMap { effect -> UInt32? in
            if case .reply(_, let id, .failure(.notFound, _)) = effect { return id }
            return nil
        }
        #expect(failedRequests == [1, 2])
        #expect(effects.contains(.rangeReopened(segment)))
        #expect(coordinator.inFlightCount == 0)
    }
}
