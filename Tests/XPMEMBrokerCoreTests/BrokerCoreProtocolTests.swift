import Testing
import XPMEMBrokerCore
import XPMEMWire

/// The broker's whole protocol through the core alone: no sockets, no daemon, time passed in by hand.
struct BrokerCoreProtocolTests {
    @Test func helloWelcomesAndAsksForTheProcessToBeWatched() {
        var broker = BrokerCoreHarness()
        let peer = broker.connect(People.owner)
        #expect(broker.request(.queryStatus, from: peer) == .failure(.notConnected, "say hello first"))
        guard case .welcome(let client, let pid) = broker.request(.hello(clientName: "a"), from: peer) else {
            Issue.record("no welcome")
            return
        }
        #expect(pid == 42)
        #expect(broker.core.client(of: peer) == client)
        #expect(broker.effects.contains(.watchProcess(peer, pid: People.owner.pid)))
        guard case .failure(.invalidArgument, _) = broker.request(.hello(clientName: "again"), from: peer) else {
            Issue.record("a second hello was accepted")
            return
        }
    }

    @Test func makeKeepsTheFilesAndRemoveDiscardsThemAndTellsImporters() {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (importer, _) = broker.join(People.stranger)
        let segment = broker.make(by: exporter)
        #expect(broker.segmentsWithFiles == [segment])
        _ = broker.attach(segment, access: .readOnly, by: importer)
        let mark = broker.mark
        #expect(broker.request(.remove(segment), from: exporter) == .done)
        #expect(broker.segmentsWithFiles.isEmpty)
        #expect(broker.sent(to: importer, on: .events, since: mark) == [.released(segment, reason: .removed)])
        // The importer's grant stays until released, but no new attach works.
        guard case .failure(.notFound, _) = broker.request(.get(segment, .readOnly), from: importer) else {
            Issue.record("a removed segment could still be got")
            return
        }
    }

    @Test func attachHandsOverTheFileOpenedAsGranted() {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (importer, _) = broker.join(People.stranger)
        let segment = broker.make(by: exporter)
        let (_, attachment) = broker.attach(segment, access: .readOnly, by: importer)
        let handOvers = broker.effects.compactMap { effect -> SegmentFileHandOver? in
            guard case .send(importer, .main, _, .attached(attachment), let handOver) = effect else { return nil }
            return handOver
        }
        #expect(handOvers == [SegmentFileHandOver(segment: segment, access: .readOnly)])
        guard case .failure(.permissionDenied, _) = broker.request(.get(segment, .readWrite), from: importer) else {
            Issue.record("a stranger got write access to a 0644 segment")
            return
        }
    }

    @Test func exporterDeathMidInvalidationReleasesImportersAndAnswersNobody() {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (importer, _) = broker.join(People.ownerElsewhere)
        let segment = broker.make(by: exporter)
        _ = broker.attach(segment, by: importer)
        #expect(broker.request(.invalidate(segment, offset: 0, length: page, deadlineMilliseconds: 1000, reason: .reuse,
                                           holdForChange: true), from: exporter) == nil)
        broker.acknowledge(segment, sequence: 1, from: importer)
        let mark = broker.mark
        broker.depart(exporter)
        #expect(broker.sent(to: importer, on: .events, since: mark) == [.released(segment, reason: .exporterExited)])
        #expect(broker.sent(to: exporter, on: .main, since: mark).isEmpty)
        #expect(broker.segmentsWithFiles.isEmpty)
        #expect(broker.core.registry.segments.isEmpty)
        #expect(broker.core.coordinator.inFlightCount == 0)
    }

    @Test func importerDeathMidInvalidationCountsAsExitedAndTheExporterIsAnswered() throws {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (first, _) = broker.join(People.ownerElsewhere)
        let (second, _) = broker.join(People.superuser)
        let segment = broker.make(by: exporter)
        _ = broker.attach(segment, by: first)
        _ = broker.attach(segment, by: second)
        let mark = broker.mark
        broker.request(.invalidate(segment, offset: 0, length: page, deadlineMilliseconds: 1000, reason: .reuse,
                                   holdForChange: false), from: exporter)
        broker.acknowledge(segment, sequence: 1, from: first)
        #expect(broker.sent(to: exporter, on: .main, since: mark).isEmpty, "answered before every importer spoke")
        broker.depart(second)
        let replies = broker.sent(to: exporter, on: .main, since: mark)
        guard case .invalidated(let report) = try #require(replies.first) else {
            Issue.record("expected an invalidation report, got \(replies)")
            return
        }
        let outcomes = report.importers.map(\.outcome)
        #expect(outcomes.count == 2 && outcomes.contains(.acknowledged) && outcomes.contains(.exited))
        #expect(broker.sent(to: first, on: .events, since: mark).last
                == .invalidateEnd(segment, offset: 0, length: page, sequence: 1))
    }

    @Test func attachDuringAnInvalidationWaitsForItsEnd() {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (holder, _) = broker.join(People.ownerElsewhere)
        let (latecomer, _) = broker.join(People.ownerElsewhere)
        let segment = broker.make(by: exporter)
        _ = broker.attach(segment, by: holder)
        broker.request(.invalidate(segment, offset: 0, length: page, deadlineMilliseconds: 1000, reason: .reuse,
                                   holdForChange: true), from: exporter)
        guard case .granted(let handle, _, _) = broker.request(.get(segment, .readWrite), from: latecomer) else {
            Issue.record("get refused")
            return
        }
        #expect(broker.request(.attach(handle, offset: 0, length: page), from: latecomer) == nil, "served inside the window")
        // Outside the invalidated range, an attach is served at once.
        guard case .attached = broker.request(.attach(handle, offset: page, length: page), from: latecomer) else {
            Issue.record("an attach outside the window waited")
            return
        }
        broker.acknowledge(segment, sequence: 1, from: holder)
        let mark = broker.mark
        #expect(broker.request(.endInvalidation(segment, sequence: 1), from: exporter) == .done)
        let served = broker.sent(to: latecomer, on: .main, since: mark)
        #expect(served.count == 1)
        guard case .attached = served.first else {
            Issue.record("the parked attach was not served at end: \(served)")
            return
        }
    }

    @Test func aParkedAttachOfADepartedPeerIsForgotten() {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (holder, _) = broker.join(People.ownerElsewhere)
        let (latecomer, _) = broker.join(People.ownerElsewhere)
        let segment = broker.make(by: exporter)
        _ = broker.attach(segment, by: holder)
        broker.request(.invalidate(segment, offset: 0, length: page, deadlineMilliseconds: 1000, reason: .reuse,
                                   holdForChange: true), from: exporter)
        guard case .granted(let handle, _, _) = broker.request(.get(segment, .readWrite), from: latecomer) else { return }
        broker.request(.attach(handle, offset: 0, length: page), from: latecomer)
        broker.depart(latecomer)
        broker.acknowledge(segment, sequence: 1, from: holder)
        let mark = broker.mark
        broker.request(.endInvalidation(segment, sequence: 1), from: exporter)
        #expect(broker.sent(to: latecomer, on: .main, since: mark).isEmpty)
    }

    @Test func aMissedDeadlineRevokesTheLateImportersGrants() {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (late, lateClient) = broker.join(People.ownerElsewhere)
        let segment = broker.make(by: exporter)
        _ = broker.attach(segment, by: late)
        broker.request(.invalidate(segment, offset: 0, length: page, deadlineMilliseconds: 5, reason: .reuse,
                                   holdForChange: false), from: exporter)
        #expect(broker.core.nextDeadline == 5000)
        let mark = broker.mark
        broker.advance(to: 4999)
        #expect(broker.sent(to: late, on: .events, since: mark).isEmpty)
        broker.advance(to: 5000)
        #expect(broker.sent(to: late, on: .events, since: mark) == [.released(segment, reason: .deadlineMissed)])
        #expect(broker.core.registry.grants.values.filter { $0.client == lateClient }.isEmpty)
        #expect(broker.effects.contains { if case .note(.deadlineMissed(lateClient, segment, 1)) = $0 { true } else { false } })
    }

    @Test func anUnsubscribedImporterIsReportedAndNotWaitedFor() throws {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (deaf, _) = broker.join(People.ownerElsewhere, subscribe: false)
        let segment = broker.make(by: exporter)
        _ = broker.attach(segment, by: deaf)
        let mark = broker.mark
        broker.request(.invalidate(segment, offset: 0, length: page, deadlineMilliseconds: 1000, reason: .reuse,
                                   holdForChange: false), from: exporter)
        guard case .invalidated(let report) = try #require(broker.sent(to: exporter, on: .main, since: mark).first) else {
            Issue.record("no report")
            return
        }
        #expect(report.importers.map(\.outcome) == [.notSubscribed])
        #expect(broker.request(.subscribe, from: deaf) == .done)
        guard case .failure(.invalidArgument, _) = broker.request(.subscribe, from: deaf) else {
            Issue.record("a second subscribe was accepted")
            return
        }
        #expect(broker.effects.filter { $0 == .adoptEventChannel(deaf) }.count == 1)
    }

    @Test func aDepartureAfterHelloFreesEverythingTheClientHeld() {
        var broker = BrokerCoreHarness()
        let (exporter, exporterClient) = broker.join(People.owner)
        let (importer, _) = broker.join(People.stranger)
        let first = broker.make(by: exporter)
        let second = broker.make(by: exporter)
        _ = broker.attach(first, access: .readOnly, by: importer)
        broker.depart(exporter)
        #expect(broker.segmentsWithFiles.isEmpty)
        #expect(broker.core.registry.clients[exporterClient] == nil)
        #expect(broker.core.registry.segments[first] == nil && broker.core.registry.segments[second] == nil)
        broker.depart(importer)
        #expect(broker.core.registry.grants.isEmpty && broker.core.registry.attachments.isEmpty)
        #expect(broker.core.peerCount == 0)
        #expect(broker.core.descriptorsInUse == 0)
    }
}
