import Testing
import XPMEMBrokerCore
import XPMEMWire

/// `claim`: segments registered under the id their owner's reclaim token stands for, as after a
/// restart of the broker (a fresh core plays the new broker: it knows nothing of the first).
struct BrokerCoreClaimTests {
    private let token = ReclaimToken(high: 0xfeed_f00d_0000_0001, low: 0x0bad_cafe_0000_0002)

    private func claim(_ requested: SegmentID?, _ token: ReclaimToken, size: UInt64 = 4 * page, permit: UInt32 = 0o644)
        -> Message
    {
        .claim(requested, token: token, size: size, permit: Permit(rawValue: permit), name: "reclaimable")
    }

    @Test func aFirstClaimGetsTheIdItsTokenStandsForAndKeepsTheFiles() throws {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let expected = try #require(token.segmentID(ownerUID: People.owner.uid))
        #expect(broker.request(claim(nil, token), from: exporter) == .made(expected))
        #expect(broker.segmentsWithFiles == [expected])
        #expect(broker.core.registry.segments[expected]?.ownerCredentials == People.owner)
        #expect(broker.effects.contains(.note(.segmentMade(expected, size: 4 * page, permit: Permit(rawValue: 0o644),
                                                            pid: People.owner.pid))))
    }

    @Test func aRestartedBrokerTakesTheSameIdBackFromItsOwnerAndImportersCanGetItAgain() throws {
        var first = BrokerCoreHarness()
        let (exporter, _) = first.join(People.owner)
        guard case .made(let id) = first.request(claim(nil, token), from: exporter) else {
            Issue.record("the first claim was refused")
            return
        }
        // The broker dies; a new one starts with nothing. The exporter (another process of the same
        // uid, here) comes back with its token; the importer comes back with the id.
        var second = BrokerCoreHarness(ids: [id.rawValue])
        let (importer, _) = second.join(People.stranger)
        guard case .failure(.notFound, _) = second.request(.get(id, .readOnly), from: importer) else {
            Issue.record("an id nobody registered yet was found")
            return
        }
        let (returning, _) = second.join(People.ownerElsewhere)
        #expect(second.request(claim(id, token), from: returning) == .made(id))
        #expect(second.effects.contains(.note(.segmentReclaimed(id, size: 4 * page, permit: Permit(rawValue: 0o644),
                                                                 pid: People.ownerElsewhere.pid, uid: People.owner.uid))))
        let (_, attachment) = second.attach(id, access: .readOnly, by: importer)
        // Invalidations reach the importer again.
        let mark = second.mark
        second.request(.invalidate(id, offset: 0, length: page, deadlineMilliseconds: 1000, reason: .reuse,
                                   holdForChange: false), from: returning)
        #expect(second.sent(to: importer, on: .events, since: mark)
                    == [.invalidateBegin(id, offset: 0, length: page, sequence: 1, reason: .reuse)])
        second.acknowledge(id, sequence: 1, from: importer)
        guard case .invalidated(let report) = second.sent(to: returning, on: .main, since: mark).last else {
            Issue.record("the exporter's invalidation was not answered")
            return
        }
        #expect(report.importers.map(\.outcome) == [.acknowledged])
        #expect(second.core.registry.attachments[attachment]?.segment == id)
        // The random ids a restarted broker hands out never collide with a claimed one.
        let fresh = second.make(by: returning)
        #expect(fresh != id)
    }

    @Test func anotherUIDCannotSquatAnIdEvenWithTheToken() throws {
        var broker = BrokerCoreHarness()
        let id = try #require(token.segmentID(ownerUID: People.owner.uid))
        let (squatter, _) = broker.join(People.stranger)
        guard case .failure(.permissionDenied, let text) = broker.request(claim(id, token), from: squatter) else {
            Issue.record("uid \(People.stranger.uid) registered uid \(People.owner.uid)'s segment id with a stolen token")
            return
        }
        #expect(text.contains("reclaim token"))
        let guessed = ReclaimToken(high: 1, low: 2)
        guard case .failure(.permissionDenied, _) = broker.request(claim(id, guessed), from: squatter) else {
            Issue.record("a guessed token registered someone's id")
            return
        }
        // What the stolen token gives another uid is an id of its own, unrelated to the owner's.
        guard case .made(let own) = broker.request(claim(nil, token), from: squatter) else {
            Issue.record("a claim without a requested id was refused")
            return
        }
        #expect(own != id)
        #expect(broker.core.registry.segments[id] == nil)
        #expect(broker.segmentsWithFiles == [own])
        // Even root cannot take it: its uid derives another id too.
        let (root, _) = broker.join(People.superuser)
        guard case .failure(.permissionDenied, _) = broker.request(claim(id, token), from: root) else {
            Issue.record("root registered uid \(People.owner.uid)'s segment id")
            return
        }
    }

    @Test func aLiveIdIsNotRegisteredTwice() throws {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (sameUID, _) = broker.join(People.ownerElsewhere)
        guard case .made(let id) = broker.request(claim(nil, token), from: exporter) else {
            Issue.record("the first claim was refused")
            return
        }
        guard case .failure(.busy, _) = broker.request(claim(id, token), from: sameUID) else {
            Issue.record("a live segment's id was registered a second time")
            return
        }
        #expect(broker.segmentsWithFiles == [id])
        #expect(broker.core.registry.segments[id]?.owner == broker.core.client(of: exporter))
    }

    @Test func grantsFromAnEarlierLifeOfTheIdDoNotAttachTheNewOne() throws {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (importer, _) = broker.join(People.stranger)
        guard case .made(let id) = broker.request(claim(nil, token, permit: 0o644), from: exporter) else {
            Issue.record("the first claim was refused")
            return
        }
        let (handle, _) = broker.attach(id, access: .readOnly, by: importer)
        broker.depart(exporter)  // the importer keeps its (now useless) grant until it releases it
        let (returning, _) = broker.join(People.ownerElsewhere)
        #expect(broker.request(claim(id, token, permit: 0o600), from: returning) == .made(id))
        guard case .failure(.notFound, _) = broker.request(.attach(handle, offset: 0, length: page), from: importer) else {
            Issue.record("a grant of the segment's earlier life attached the new one, whose mode refuses this importer")
            return
        }
    }

    @Test func claimsCountAgainstTheQuotasAndAreCheckedLikeMake() throws {
        var quotas = BrokerQuotas()
        quotas.segmentsPerUID = 1
        var broker = BrokerCoreHarness(quotas: quotas)
        let (exporter, _) = broker.join(People.stranger)
        guard case .made = broker.request(claim(nil, token), from: exporter) else {
            Issue.record("the first claim was refused")
            return
        }
        guard case .failure(.resourceExhausted, _) = broker.request(claim(nil, ReclaimToken(high: 3, low: 4)), from: exporter) else {
            Issue.record("a claim went past --max-segments-per-uid")
            return
        }
        var other = BrokerCoreHarness()
        let (peer, _) = other.join(People.owner)
        guard case .failure(.invalidArgument, _) = other.request(claim(nil, token, size: 100), from: peer) else {
            Issue.record("a claim of a size that is not whole pages was accepted")
            return
        }
        guard case .failure(.invalidArgument, _) = other.request(claim(nil, token, permit: 0o4600), from: peer) else {
            Issue.record("a claim with a set-uid bit in its permit was accepted")
            return
        }
        #expect(other.segmentsWithFiles.isEmpty)
    }

    @Test func anAddressSpaceWindowIsClaimedBackWithItsIdAndAttachesThroughTheExporterAgain() throws {
        let window = (base: UInt64(0x7f00_0000_0000), size: 64 * page)
        func claimWindow(_ requested: SegmentID?, base: UInt64 = window.base) -> Message {
            .claimAddressSpace(requested, token: token, base: base, size: window.size, permit: Permit(rawValue: 0o666),
                               name: "rank 0")
        }
        var first = BrokerCoreHarness()
        let (exporter, _) = first.join(People.owner, subscribe: true)
        let expected = try #require(token.segmentID(ownerUID: People.owner.uid))
        #expect(first.request(claimWindow(nil), from: exporter) == .made(expected))
        #expect(first.core.registry.segments[expected]?.addressSpaceBase == window.base)
        #expect(first.core.registry.segments[expected]?.size == window.size)
        #expect(first.segmentsWithFiles == [expected])
        guard case .failure(.invalidArgument, _) = first.request(
            .claimAddressSpace(nil, token: ReclaimToken(high: 9, low: 9), base: window.base + 1, size: window.size,
                               permit: Permit(rawValue: 0o666), name: ""), from: exporter) else {
            Issue.record("a window at an address that is not page-aligned was claimed")
            return
        }
        // The same token and uid cannot hold a memfd segment and a window under one id at once.
        guard case .failure(.busy, _) = first.request(claim(expected, token), from: exporter) else {
            Issue.record("a live id was registered a second time as another kind of segment")
            return
        }

        // A new broker: the exporter registers its window again, and an importer attaches it.
        var second = BrokerCoreHarness(ids: [expected.rawValue])
        let (returning, _) = second.join(People.owner, subscribe: true)
        let (importer, _) = second.join(People.stranger)
        #expect(second.request(claimWindow(expected), from: returning) == .made(expected))
        #expect(second.effects.contains(.note(.segmentReclaimed(expected, size: window.size, permit: Permit(rawValue: 0o666),
                                                                 pid: People.owner.pid, uid: People.owner.uid))))
        guard case .granted(let handle, window.size, .readWrite) = second.request(.get(expected, .readWrite), from: importer)
        else {
            Issue.record("the claimed window could not be got")
            return
        }
        let mark = second.mark
        #expect(second.request(.attach(handle, offset: 4 * page, length: 2 * page), from: importer) == nil,
                "answered before the exporter backed the range")
        let asked = second.sent(to: returning, on: .events, since: mark).contains {
            if case .backRange(expected, _, window.base + 4 * page, 2 * page) = $0 { return true }
            return false
        }
        #expect(asked, "the exporter was not asked to back the attached range of its window")
    }
}
