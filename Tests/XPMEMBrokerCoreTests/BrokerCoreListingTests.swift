import Testing
import XPMEMBrokerCore
import XPMEMWire

/// Listings page through what the asker may see.
struct BrokerCoreListingTests {
    /// Every id in a `segments` listing, page by page, as `xpmemctl segments` walks it.
    static func listAll(_ broker: inout BrokerCoreHarness, as peer: PeerID) -> [String] {
        var seen: [String] = []
        var after: SegmentID? = nil
        while true {
            guard case .segments(let list, let more) = broker.request(.listSegments(after: after), from: peer) else {
                Issue.record("listing refused")
                return seen
            }
            #expect(list.count <= BrokerCore.listingPageSize)
            seen += list.map(\.id)
            guard more, let last = list.last else { return seen }
            after = SegmentID(last.id)
        }
    }

    @Test func pagesCoverEverySegmentOnce() {
        var broker = BrokerCoreHarness()
        let (owner, _) = broker.join(People.owner)
        let made = (0..<(BrokerCore.listingPageSize + 20)).map { _ in broker.make(permit: 0o600, by: owner) }
        guard case .segments(let first, true) = broker.request(.listSegments(after: nil), from: owner) else {
            Issue.record("the first page did not say more follow")
            return
        }
        #expect(first.count == BrokerCore.listingPageSize)
        let all = Self.listAll(&broker, as: owner)
        #expect(all == made.sorted().map(\.description))
    }

    @Test func aStrangerSeesOnlyWhatItMayGet() {
        var broker = BrokerCoreHarness()
        let (owner, _) = broker.join(People.owner)
        let (stranger, _) = broker.join(People.stranger)
        let (groupMember, _) = broker.join(People.groupMember)
        let (root, _) = broker.join(People.superuser)
        let privateSegment = broker.make(permit: 0o600, by: owner)
        let groupSegment = broker.make(permit: 0o640, by: owner)
        let publicSegment = broker.make(permit: 0o644, by: owner)
        #expect(Self.listAll(&broker, as: stranger) == [publicSegment.description])
        #expect(Set(Self.listAll(&broker, as: groupMember)) == [groupSegment.description, publicSegment.description])
        let everything: Set<String> = [privateSegment.description, groupSegment.description, publicSegment.description]
        #expect(Set(Self.listAll(&broker, as: owner)) == everything)
        #expect(Self.listAll(&broker, as: root).count == 3)
    }

    /// A client's attachment cache report shows in the clients listing until the next replaces it;
    /// clients that never reported show none.
    @Test func attachCacheReportsShowInTheClientsListing() {
        var broker = BrokerCoreHarness()
        let (importer, importerID) = broker.join(People.owner)
        let (other, otherID) = broker.join(People.stranger)
        let first = AttachCacheCounters(hits: 10, misses: 2, capacityEvictions: 1, pressureEvictions: 0, entries: 3,
                                        bytes: 12288)
        let second = AttachCacheCounters(hits: 40, misses: 3, capacityEvictions: 1, pressureEvictions: 2, entries: 1,
                                         bytes: 4096)
        #expect(broker.request(.reportAttachCache(first), from: importer) == .done)
        #expect(broker.request(.reportAttachCache(second), from: importer) == .done)
        guard case .clients(let list) = broker.request(.listClients, from: other) else {
            Issue.record("listing refused")
            return
        }
        #expect(list.first { $0.id == importerID.rawValue }?.attachCache == second)
        #expect(list.first { $0.id == otherID.rawValue }.map { $0.attachCache == nil } == true)
    }
}
