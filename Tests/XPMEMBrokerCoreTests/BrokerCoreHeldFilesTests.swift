import Testing
import XPMEMBrokerCore
import XPMEMWire

/// A client's windows of one address-space file cost the broker that file's descriptors once.
struct BrokerCoreHeldFilesTests {
    static let addressSpaceFile = FileIdentity(device: 7, inode: 100)
    static let otherFile = FileIdentity(device: 7, inode: 200)

    /// A window of `size` bytes at `base`, made with `file`; its id, or nil if refused.
    static func window(_ broker: inout BrokerCoreHarness, by peer: PeerID, base: UInt64, size: UInt64 = page,
                       file: FileIdentity?) -> SegmentID? {
        guard case .made(let id) = broker.request(
            .makeAddressSpace(base: base, size: size, permit: Permit(rawValue: 0o600), name: "window"), from: peer,
            file: file) else { return nil }
        return id
    }

    /// Which segment's files the daemon was told to keep for `segment`, and whether it shares them.
    static func kept(_ segment: SegmentID, in broker: BrokerCoreHarness) -> SegmentID?? {
        for case .keepSegmentFiles(segment, let sharing) in broker.effects { return .some(sharing) }
        return .none
    }

    @Test func windowsOfOneFileShareItsDescriptorsUntilTheLastGoes() throws {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let connections = broker.core.descriptorsInUse
        let first = try #require(Self.window(&broker, by: exporter, base: 0, file: Self.addressSpaceFile))
        #expect(Self.kept(first, in: broker) == .some(nil))
        #expect(broker.core.descriptorsInUse == connections + BrokerQuotas.descriptorsPerFile)
        var windows = [first]
        for index in 1..<100 {
            let id = try #require(Self.window(&broker, by: exporter, base: UInt64(index) * page, file: Self.addressSpaceFile))
            guard case .some(.some(let sharer)) = Self.kept(id, in: broker), windows.contains(sharer) else {
                Issue.record("window \(index) did not share the file of an earlier window")
                return
            }
            windows.append(id)
        }
        #expect(broker.core.registry.heldFiles.count == 1)
        #expect(broker.core.descriptorsInUse == connections + BrokerQuotas.descriptorsPerFile)

        // The first window goes; the file stays for the others, and a new window shares it with one of them.
        #expect(broker.request(.remove(first), from: exporter) == .done)
        #expect(broker.core.registry.heldFiles.count == 1)
        let late = try #require(Self.window(&broker, by: exporter, base: 0, file: Self.addressSpaceFile))
        guard case .some(.some(let sharer)) = Self.kept(late, in: broker) else {
            Issue.record("a window of a held file did not share it")
            return
        }
        #expect(sharer != first && windows.contains(sharer))
        for id in windows.dropFirst() + [late] { #expect(broker.request(.remove(id), from: exporter) == .done) }
        #expect(broker.core.registry.heldFiles.count == 0)
        #expect(broker.core.descriptorsInUse == connections)
        // With none left, the next window brings the file again.
        let again = try #require(Self.window(&broker, by: exporter, base: 0, file: Self.addressSpaceFile))
        #expect(Self.kept(again, in: broker) == .some(nil))
    }

    @Test func onlyOneClientsWindowsOfTheSameFileShare() throws {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (forked, _) = broker.join(People.owner)
        let first = try #require(Self.window(&broker, by: exporter, base: 0, file: Self.addressSpaceFile))
        // Another file of the same client, another client's window of the same inode (a forked child's
        // connection), a window whose file the daemon did not name, and a memfd segment: none shares.
        let other = try #require(Self.window(&broker, by: exporter, base: page, file: Self.otherFile))
        let child = try #require(Self.window(&broker, by: forked, base: 0, file: Self.addressSpaceFile))
        let unnamed = try #require(Self.window(&broker, by: exporter, base: 2 * page, file: nil))
        guard case .made(let segment) = broker.request(
            .make(size: page, permit: Permit(rawValue: 0o600), name: "memfd"), from: exporter, file: Self.addressSpaceFile)
        else {
            Issue.record("make was refused")
            return
        }
        for id in [first, other, child, unnamed, segment] { #expect(Self.kept(id, in: broker) == .some(nil)) }
        #expect(broker.core.registry.heldFiles.count == 5)
        // The client's departure lets go of what it held, the other client's file stays.
        broker.depart(exporter)
        #expect(broker.core.registry.heldFiles.count == 1)
        #expect(broker.core.registry.segments.keys.sorted() == [child])
    }

    @Test func aWindowOfAHeldFileIsAdmittedWhenTheBudgetHasNoRoomForANewFile() throws {
        // Room for two connections (3 descriptors each) and one file (2): 8.
        var broker = BrokerCoreHarness(quotas: BrokerCoreQuotaTests.quotas(segments: 1000, budget: 8, reserve: 0))
        let (exporter, _) = broker.join(People.stranger, subscribe: false)
        _ = broker.join(People.stranger, subscribe: false)
        _ = try #require(Self.window(&broker, by: exporter, base: 0, file: Self.addressSpaceFile))
        for index in 1..<50 {
            #expect(Self.window(&broker, by: exporter, base: UInt64(index) * page, file: Self.addressSpaceFile) != nil)
        }
        guard case .failure(.resourceExhausted, let text) = broker.request(
            .makeAddressSpace(base: 0, size: page, permit: Permit(rawValue: 0o600), name: "new file"), from: exporter,
            file: Self.otherFile)
        else {
            Issue.record("a window of a new file was admitted past the descriptor budget")
            return
        }
        #expect(text.contains("descriptor budget"))
    }

    @Test func windowsClaimedBackAfterARestartShareTheirFileAndPassAFullBudget() throws {
        // Room for one connection (3 descriptors) and one file (2): what a restarted broker sees first
        // from an exporter claiming its windows back.
        var broker = BrokerCoreHarness(quotas: BrokerCoreQuotaTests.quotas(segments: 1000, budget: 5, reserve: 0))
        let (exporter, _) = broker.join(People.stranger, subscribe: false)
        var claimed: [SegmentID] = []
        for index in 0..<20 {
            let token = ReclaimToken(high: 0x5eed, low: UInt64(index))
            guard case .made(let id) = broker.request(
                .claimAddressSpace(nil, token: token, base: UInt64(index) * page, size: page, permit: Permit(rawValue: 0o600),
                                   name: "rank"), from: exporter, file: Self.addressSpaceFile)
            else {
                Issue.record("claim \(index) of a window of the held file was refused")
                return
            }
            let sharing = try #require(Self.kept(id, in: broker))
            #expect(index == 0 ? sharing == nil : sharing.map(claimed.contains) == true)
            claimed.append(id)
        }
        #expect(broker.core.registry.heldFiles.count == 1)
        guard case .failure(.resourceExhausted, _) = broker.request(
            .claimAddressSpace(nil, token: ReclaimToken(high: 0x5eed, low: 99), base: 0, size: page,
                               permit: Permit(rawValue: 0o600), name: "other file"), from: exporter, file: Self.otherFile)
        else {
            Issue.record("a claim of a window of a new file passed the descriptor budget")
            return
        }
    }
}
