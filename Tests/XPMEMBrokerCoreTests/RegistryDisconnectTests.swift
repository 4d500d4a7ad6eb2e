import Testing
import XPMEMBrokerCore
import XPMEMWire

struct RegistryDisconnectTests {
    @Test func exporterDepartureRemovesItsSegmentsOnly() throws {
        var registry = makeRegistry(ids: [30, 10, 20])
        let exporter = registry.connect(People.owner, name: "exporter")
        let bystander = registry.connect(People.groupMember, name: "bystander")
        let first = try registry.make(by: exporter, size: page, permit: Permit(rawValue: 0o666), name: "")
        let second = try registry.make(by: exporter, size: page, permit: Permit(rawValue: 0o666), name: "")
        let survivor = try registry.make(by: bystander, size: page, permit: Permit(rawValue: 0o666), name: "")
        let importer = registry.connect(People.stranger, name: "importer")
        let handle = try registry.get(first, access: .readOnly, by: importer).handle
        _ = try registry.attach(handle, offset: 0, length: page, by: importer)

        let departure = registry.disconnect(exporter)

        #expect(departure.removedSegments == [first, second].sorted())
        #expect(departure.releasedGrants == 0)
        #expect(departure.detachedAttachments == 0)
        #expect(registry.clients[exporter] == nil)
        #expect(Array(registry.segments.keys) == [survivor])
        // The importer's grant outlives the segment but leads nowhere.
        expectRefusal(.notFound) { () throws(BrokerError) in
            try registry.attach(handle, offset: 0, length: page, by: importer)
        }
    }

    @Test func importerDepartureFreesItsGrantsAndAttachments() throws {
        var registry = makeRegistry()
        let exporter = registry.connect(People.owner, name: "exporter")
        let segment = try registry.make(by: exporter, size: 4 * page, permit: Permit(rawValue: 0o666), name: "")
        let importer = registry.connect(People.stranger, name: "importer")
        let other = registry.connect(People.stranger, name: "other importer")
        let readOnly = try registry.get(segment, access: .readOnly, by: importer).handle
        let readWrite = try registry.get(segment, access: .readWrite, by: importer).handle
        for offset in [0, page] { _ = try registry.attach(readOnly, offset: offset, length: page, by: importer) }
        _ = try registry.attach(readWrite, offset: 0, length: 4 * page, by: importer)
        let othersHandle = try registry.get(segment, access: .readOnly, by: other).handle
        let othersAttachment = try registry.attach(othersHandle, offset: 0, length: page, by: other)

        let departure = registry.disconnect(importer)

        #expect(departure.removedSegments.isEmpty)
        #expect(departure.releasedGrants == 2)
        #expect(departure.detachedAttachments == 3)
        #expect(registry.clients[importer] == nil)
        #expect(registry.segments[segment] != nil)
        #expect(Array(registry.grants.keys) == [othersHandle])
        #expect(Array(registry.attachments.keys) == [othersAttachment.id])
    }

    @Test func clientImportingItsOwnSegmentIsCountedBothWays() throws {
        var registry = makeRegistry()
        let client = registry.connect(People.owner, name: "both")
        let segment = try registry.make(by: client, size: page, permit: Permit(rawValue: 0o600), name: "")
        let handle = try registry.get(segment, access: .readWrite, by: client).handle
        _ = try registry.attach(handle, offset: 0, length: page, by: client)

        let departure = registry.disconnect(client)

        #expect(departure.removedSegments == [segment])
        #expect(departure.releasedGrants == 1)
        #expect(departure.detachedAttachments == 1)
        #expect(registry.segments.isEmpty && registry.grants.isEmpty && registry.attachments.isEmpty)
    }

    @Test func unknownOrRepeatedDisconnectChangesNothing() throws {
        var registry = makeRegistry()
        let client = registry.connect(People.owner, name: "exporter")
        _ = try registry.make(by: client, size: page, permit: Permit(rawValue: 0o600), name: "")
        #expect(registry.disconnect(client).removedSegments.count == 1)

        for departure in [registry.disconnect(client), registry.disconnect(ClientID(rawValue: 77))] {
            #expect(departure.removedSegments.isEmpty)
            #expect(departure.releasedGrants == 0)
            #expect(departure.detachedAttachments == 0)
        }
    }

    @Test func clientIDsAreNotReusedAfterDisconnect() {
        var registry = makeRegistry()
        let first = registry.connect(People.owner, name: "a")
        _ = registry.disconnect(first)
        let second = registry.connect(People.owner, name: "b")
        #expect(first != second)
    }
}
