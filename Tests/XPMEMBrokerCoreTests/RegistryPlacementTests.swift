import Testing
import XPMEMWire
@testable import XPMEMBrokerCore

/// The NUMA bookkeeping the broker does without touching memory: placements and importers' nodes.
@Suite struct RegistryPlacementTests {
    let owner = Credentials(pid: 10, uid: 1000, gid: 1000, supplementaryGroups: [])

    @Test func theOwnerDescribesThePlacementAndListingsShowIt() throws {
        var registry = makeRegistry()
        let exporter = registry.connect(owner, name: "exporter", node: 0)
        let id = try registry.make(by: exporter, size: 1 << 20, permit: Permit(rawValue: 0o666), name: "s")
        #expect(registry.segmentSummaries(after: nil, limit: 10).list.first?.placement == "first-touch")
        try registry.describePlacement(of: id, as: "node 1", by: exporter)
        #expect(registry.segmentSummaries(after: nil, limit: 10).list.first?.placement == "node 1")
        #expect(registry.clientSummaries().first?.node == 0)
    }

    @Test func onlyTheOwnerMayDescribeAndTheTextIsBounded() throws {
        var registry = makeRegistry()
        let exporter = registry.connect(owner, name: "exporter", node: nil)
        let other = registry.connect(Credentials(pid: 11, uid: 1000, gid: 1000, supplementaryGroups: []), name: "other")
        let id = try registry.make(by: exporter, size: 4096, permit: Permit(rawValue: 0o666), name: "s")
        #expect(throws: BrokerError.self) { try registry.describePlacement(of: id, as: "node 0", by: other) }
        #expect(throws: BrokerError.self) { try registry.describePlacement(of: id, as: "", by: exporter) }
        #expect(throws: BrokerError.self) { try registry.describePlacement(of: id, as: String(repeating: "x", count: 65), by: exporter) }
        #expect(throws: BrokerError.self) { try registry.describePlacement(of: id, as: "node\n1", by: exporter) }
        #expect(throws: BrokerError.self) { try registry.describePlacement(of: SegmentID(rawValue: 99), as: "node 0", by: exporter) }
        #expect(registry.segments[id]?.placement == "first-touch")
    }

    @Test func theOwnerDescribesThePagesWithTheSameBoundsAndListingsShowThem() throws {
        var registry = makeRegistry()
        let exporter = registry.connect(owner, name: "exporter", node: nil)
        let other = registry.connect(Credentials(pid: 11, uid: 1000, gid: 1000, supplementaryGroups: []), name: "other")
        let id = try registry.make(by: exporter, size: 1 << 21, permit: Permit(rawValue: 0o666), name: "s")
        #expect(registry.segmentSummaries(after: nil, limit: 10).list.first?.pages == "4 KiB")
        try registry.describePages(of: id, as: "THP 2 of 2 MiB", by: exporter)
        #expect(registry.segmentSummaries(after: nil, limit: 10).list.first?.pages == "THP 2 of 2 MiB")
        #expect(throws: BrokerError.self) { try registry.describePages(of: id, as: "4 KiB", by: other) }
        #expect(throws: BrokerError.self) { try registry.describePages(of: id, as: String(repeating: "x", count: 65), by: exporter) }
        #expect(throws: BrokerError.self) { try registry.describePages(of: id, as: "THP\u{1b}[2J", by: exporter) }
        #expect(registry.segments[id]?.pages == "THP 2 of 2 MiB")
    }

    @Test func theImporterNodeIsWhereMostAttachedBytesAreUsed() throws {
        var registry = makeRegistry()
        let exporter = registry.connect(owner, name: "exporter", node: 0)
        let id = try registry.make(by: exporter, size: 1 << 20, permit: Permit(rawValue: 0o666), name: "s")
        #expect(registry.importerNode(of: id) == nil, "nothing attached yet")
        func importer(on node: Int?, pid: Int32, bytes: UInt64) throws {
            let client = registry.connect(Credentials(pid: pid, uid: 1000, gid: 1000, supplementaryGroups: []),
                                          name: "importer", node: node)
            let grant = try registry.get(id, access: AccessMode.readOnly, by: client)
            _ = try registry.attach(grant.handle, offset: 0, length: bytes, by: client)
        }
        try importer(on: 1, pid: 20, bytes: 64 << 10)
        try importer(on: 1, pid: 21, bytes: 64 << 10)
        try importer(on: 0, pid: 22, bytes: 96 << 10)
        try importer(on: nil, pid: 23, bytes: 1 << 20)  // unknown node: not counted
        #expect(registry.importerNode(of: id) == 1, "128 KiB on node 1 beat 96 KiB on node 0")
        try importer(on: 0, pid: 24, bytes: 32 << 10)
        #expect(registry.importerNode(of: id) == 0, "a tie goes to the lower node")
        #expect(registry.segmentSummaries(after: nil, limit: 10).list.first?.importerNode == 0)
    }
}
