import Testing
import XPMEMBrokerCore
import XPMEMWire

/// Per-uid quotas and the descriptor budget: one local user cannot lock the others out.
struct BrokerCoreQuotaTests {
    static func quotas(connections: Int = 3, segments: Int = 4, bytes: UInt64 = 1 << 30, budget: Int = 100,
                       reserve: Int = 20) -> BrokerQuotas {
        var quotas = BrokerQuotas()
        quotas.connectionsPerUID = connections
        quotas.segmentsPerUID = segments
        quotas.bytesPerUID = bytes
        quotas.descriptorBudget = budget
        quotas.administratorReserve = reserve
        quotas.brokerUID = 0
        return quotas
    }

    @Test func aUIDPastItsConnectionQuotaIsToldWhyAtHelloAndClosed() {
        var broker = BrokerCoreHarness(quotas: Self.quotas(connections: 2))
        _ = broker.join(People.stranger)
        _ = broker.join(People.stranger)
        let third = broker.connect(People.stranger)
        guard case .failure(.resourceExhausted, let text) = broker.request(.hello(clientName: "x"), from: third) else {
            Issue.record("the third connection was welcomed")
            return
        }
        #expect(text.contains("uid 4000") && text.contains("connections"))
        #expect(broker.closed == [third])
        // Another uid is not affected, and root is exempt.
        _ = broker.join(People.owner)
        _ = broker.join(People.superuser)
        _ = broker.join(People.superuser)
        _ = broker.join(People.superuser)
        // A departure gives the slot back.
        broker.depart(third)
        let fourth = broker.connect(People.stranger)
        guard case .failure = broker.request(.hello(clientName: "x"), from: fourth) else {
            Issue.record("two connections are still open: the quota is still reached")
            return
        }
    }

    @Test func segmentAndByteQuotasNameTheLimit() {
        var broker = BrokerCoreHarness(quotas: Self.quotas(segments: 2, bytes: 16 * page))
        let (peer, _) = broker.join(People.stranger)
        _ = broker.make(size: 4 * page, by: peer)
        guard case .failure(.resourceExhausted, let bytesText) = broker.request(
            .make(size: 16 * page, permit: Permit(rawValue: 0o600), name: "big"), from: peer) else {
            Issue.record("the byte quota was not enforced")
            return
        }
        #expect(bytesText.contains("--max-bytes-per-uid"))
        let second = broker.make(size: 4 * page, by: peer)
        guard case .failure(.resourceExhausted, let countText) = broker.request(
            .make(size: page, permit: Permit(rawValue: 0o600), name: "third"), from: peer) else {
            Issue.record("the segment quota was not enforced")
            return
        }
        #expect(countText.contains("--max-segments-per-uid"))
        #expect(broker.request(.remove(second), from: peer) == .done)
        _ = broker.make(size: page, by: peer)
    }

    @Test func theReserveKeepsRootAbleToConnectWhenOthersSpentTheBudget() {
        // 100 descriptors, 20 of them for administrators: 26 connections of 3 are 78, the 27th would pass 80.
        var broker = BrokerCoreHarness(quotas: Self.quotas(connections: 1000, budget: 100, reserve: 20))
        var users: [Credentials] = []
        for index in 0..<26 { users.append(Credentials(pid: 500 + Int32(index), uid: 5000, gid: 5000)) }
        for user in users { _ = broker.join(user) }
        #expect(broker.closed.isEmpty)
        let refused = broker.connect(Credentials(pid: 999, uid: 6000, gid: 6000))
        #expect(broker.closed == [refused], "a user got into the administrators' reserve")
        broker.depart(refused)
        let (root, _) = broker.join(People.superuser)
        #expect(broker.request(.listClients, from: root) != nil)
        #expect(!broker.closed.contains(root))
    }
}
