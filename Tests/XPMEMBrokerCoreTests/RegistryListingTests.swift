import Testing
import XPMEMBrokerCore
import XPMEMWire

struct RegistryListingTests {
    /// Five segments whose ids arrive out of order, so paging must sort.
    static func fiveSegments() throws -> Registry {
        var registry = makeRegistry(ids: [50, 10, 40, 20, 30])
        let owner = registry.connect(People.owner, name: "exporter")
        for index in 0..<5 {
            _ = try registry.make(by: owner, size: page, permit: Permit(rawValue: 0o600), name: "s\(index)")
        }
        return registry
    }

    static func ids(_ list: [SegmentSummary]) -> [String] { list.map(\.id) }
    static func text(_ raw: UInt64) -> String { SegmentID(rawValue: raw).description }

    static let pages: [(after: UInt64?, limit: Int, expected: [UInt64], more: Bool)] = [
        (nil, 2, [10, 20], true),
        (20, 2, [30, 40], true),
        (40, 2, [50], false),
        (30, 2, [40, 50], false),  // exactly the rest: nothing more
        (25, 2, [30, 40], true),  // `after` need not exist any more
        (50, 2, [], false),
        (nil, 5, [10, 20, 30, 40, 50], false),
        (nil, 4, [10, 20, 30, 40], true),
        (nil, 0, [], true),
    ]

    @Test("Pages follow id order after `after`, and `more` says whether anything is left", arguments: pages)
    func paging(_ after: UInt64?, _ limit: Int, _ expected: [UInt64], _ more: Bool) throws {
        let registry = try Self.fiveSegments()
        let page = registry.segmentSummaries(after: after.map { SegmentID(rawValue: $0) }, limit: limit)
        #expect(Self.ids(page.list) == expected.map(Self.text))
        #expect(page.more == more)
    }

    @Test func walkingAllPagesVisitsEverySegmentOnce() throws {
        let registry = try Self.fiveSegments()
        var seen: [String] = []
        var after: SegmentID? = nil
        while true {
            let page = registry.segmentSummaries(after: after, limit: 2)
            seen += Self.ids(page.list)
            guard page.more, let last = page.list.last else { break }
            after = SegmentID(last.id)
        }
        #expect(seen == [10, 20, 30, 40, 50].map(Self.text))
    }

    @Test func summaryCountsDistinctImportersAndTheirAttachments() throws {
        var registry = makeRegistry(ids: [0x51])
        let owner = registry.connect(Credentials(pid: 4321, uid: 1000, gid: 1000), name: "exporter")
        let segment = try registry.make(by: owner, size: 2 * page, permit: Permit(rawValue: 0o644),
                                        name: "frame buffer")
        let alice = registry.connect(People.stranger, name: "alice")
        let bob = registry.connect(People.groupMember, name: "bob")
        let aliceFirst = try registry.get(segment, access: .readOnly, by: alice).handle
        let aliceSecond = try registry.get(segment, access: .readOnly, by: alice).handle
        let bobs = try registry.get(segment, access: .readOnly, by: bob).handle
        _ = try registry.attach(aliceFirst, offset: 0, length: page, by: alice)
        _ = try registry.attach(aliceSecond, offset: page, length: page, by: alice)
        _ = try registry.attach(bobs, offset: 0, length: 2 * page, by: bob)

        let list = registry.segmentSummaries(after: nil, limit: 10).list
        #expect(list == [SegmentSummary(id: segment, ownerPID: 4321, ownerUID: 1000, size: 2 * page,
                                        permit: Permit(rawValue: 0o644), name: "frame buffer",
                                        importers: 2, attachments: 3)])
    }

    @Test func clientSummariesAreInConnectionOrderWithCounts() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let importer = registry.connect(People.stranger, name: "importer")
        let idle = registry.connect(People.groupMember, name: "idle")
        let segment = try registry.make(by: owner, size: page, permit: Permit(rawValue: 0o666), name: "")
        _ = try registry.make(by: owner, size: page, permit: Permit(rawValue: 0o666), name: "")
        let handle = try registry.get(segment, access: .readOnly, by: importer).handle
        _ = try registry.get(segment, access: .readWrite, by: importer)
        for _ in 0..<3 { _ = try registry.attach(handle, offset: 0, length: page, by: importer) }
        _ = registry.disconnect(idle)
        let late = registry.connect(People.superuser, name: "late")

        #expect(registry.clientSummaries() == [
            ClientSummary(id: owner.rawValue, pid: 100, uid: 1000, gid: 1000, name: "exporter", segments: 2,
                          grants: 0, attachments: 0),
            ClientSummary(id: importer.rawValue, pid: 400, uid: 4000, gid: 4000, name: "importer", segments: 0,
                          grants: 2, attachments: 3),
            ClientSummary(id: late.rawValue, pid: 1, uid: 0, gid: 0, name: "late", segments: 0, grants: 0,
                          attachments: 0),
        ])
    }
}
