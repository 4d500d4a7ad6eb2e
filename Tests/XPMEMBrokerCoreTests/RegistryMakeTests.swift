import Testing
import XPMEMBrokerCore
import XPMEMWire

struct RegistryMakeTests {
    @Test func makeRecordsTheSegmentForItsOwner() throws {
        var registry = makeRegistry(ids: [0xABCD])
        let owner = registry.connect(People.owner, name: "exporter")
        let id = try registry.make(by: owner, size: 3 * page, permit: Permit(rawValue: 0o640), name: "buffer")

        #expect(id == SegmentID(rawValue: 0xABCD))
        let record = try #require(registry.segments[id])
        #expect(record.owner == owner)
        #expect(record.ownerCredentials == People.owner)
        #expect(record.size == 3 * page)
        #expect(record.permit == Permit(rawValue: 0o640))
        #expect(record.name == "buffer")
        #expect(registry.clients[owner]?.segments == [id])
    }

    @Test("Sizes that are zero, not page multiples, or above the limit are refused",
          arguments: [UInt64(0), 1, page - 1, page + 1, 3 * page + 512, (1 << 40) + page, UInt64.max & ~(page - 1)])
    func invalidSizeIsRefused(_ size: UInt64) {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        expectRefusal(.invalidArgument) { () throws(BrokerError) in
            try registry.make(by: owner, size: size, permit: Permit(rawValue: 0o600), name: "")
        }
        #expect(registry.segments.isEmpty)
    }

    @Test func sizeLimitIsInclusive() throws {
        var limits = RegistryLimits()
        limits.maximumSegmentSize = 8 * page
        var registry = makeRegistry(limits: limits)
        let owner = registry.connect(People.owner, name: "exporter")
        _ = try registry.make(by: owner, size: 8 * page, permit: Permit(rawValue: 0o600), name: "")
        expectRefusal(.invalidArgument) { () throws(BrokerError) in
            try registry.make(by: owner, size: 9 * page, permit: Permit(rawValue: 0o600), name: "")
        }
    }

    @Test("Permits with execute or special bits are refused",
          arguments: [UInt32(0o700), 0o100, 0o001, 0o777, 0o1600, 0o4600, 0o10000, UInt32.max])
    func invalidPermitIsRefused(_ bits: UInt32) {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        expectRefusal(.invalidArgument) { () throws(BrokerError) in
            try registry.make(by: owner, size: page, permit: Permit(rawValue: bits), name: "")
        }
        #expect(registry.segments.isEmpty)
    }

    @Test("Every combination of read and write bits is accepted", arguments: [UInt32(0), 0o600, 0o644, 0o666, 0o042])
    func validPermitIsAccepted(_ bits: UInt32) throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let id = try registry.make(by: owner, size: page, permit: Permit(rawValue: bits), name: "")
        #expect(registry.segments[id]?.permit == Permit(rawValue: bits))
    }

    @Test func unknownClientMustSayHelloFirst() {
        var registry = makeRegistry()
        expectRefusal(.notConnected) { () throws(BrokerError) in
            try registry.make(by: ClientID(rawValue: 42), size: page, permit: Permit(rawValue: 0o600), name: "")
        }
    }

    @Test func zeroAndRepeatedRandomValuesAreSkipped() throws {
        let source = ScriptedRandomSource([0, 7, 7, 0, 7, 9, 7, 9, 11])
        var registry = Registry(randomSource: source.function)
        let owner = registry.connect(People.owner, name: "exporter")
        let permit = Permit(rawValue: 0o600)

        let first = try registry.make(by: owner, size: page, permit: permit, name: "")
        #expect(first.rawValue == 7)
        let second = try registry.make(by: owner, size: page, permit: permit, name: "")
        #expect(second.rawValue == 9)
        // A removed segment's id stays spent: 7 and 9 are offered again and refused.
        try registry.remove(first, by: owner)
        let third = try registry.make(by: owner, size: page, permit: permit, name: "")
        #expect(third.rawValue == 11)
        #expect(source.draws == 9)
    }

    @Test func idsStayUniqueWhenTheSourceRepeatsOftenAndSegmentsComeAndGo() throws {
        // Only 40 usable values, each offered many times, in a deterministic order.
        let state = ScriptedRandomSource([])
        let source: @Sendable () -> UInt64 = {
            ((state.next() &* 0x9E37_79B9_7F4A_7C15) >> 58) % 41
        }
        var registry = Registry(randomSource: source)
        let owner = registry.connect(People.owner, name: "exporter")
        let permit = Permit(rawValue: 0o600)
        var issued: [SegmentID] = []
        for _ in 0..<20 { issued.append(try registry.make(by: owner, size: page, permit: permit, name: "")) }
        for id in issued { try registry.remove(id, by: owner) }
        for _ in 0..<15 { issued.append(try registry.make(by: owner, size: page, permit: permit, name: "")) }

        #expect(Set(issued).count == issued.count)
        #expect(!issued.contains(SegmentID(rawValue: 0)))
        #expect(issued.allSatisfy { $0.rawValue <= 40 })
    }
}
