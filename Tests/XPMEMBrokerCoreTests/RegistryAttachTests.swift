import Testing
import XPMEMBrokerCore
import XPMEMWire

/// A four-page segment with one importer holding a read-write grant.
struct AttachScene {
    var registry = makeRegistry()
    let owner: ClientID
    let importer: ClientID
    let segment: SegmentID
    let handle: AccessHandle

    init() throws {
        owner = registry.connect(People.owner, name: "exporter")
        segment = try registry.make(by: owner, size: 4 * page, permit: Permit(rawValue: 0o606), name: "shared")
        importer = registry.connect(People.stranger, name: "importer")
        handle = try registry.get(segment, access: .readWrite, by: importer).handle
    }
}

struct RegistryAttachTests {
    static let rangesInside: [(offset: UInt64, length: UInt64)] = [
        (0, page), (3 * page, page), (0, 4 * page), (page, 2 * page),
    ]

    static let rangesRefused: [(offset: UInt64, length: UInt64)] = [
        (1, page),  // unaligned offset
        (page / 2, page),
        (0, 1),  // unaligned length
        (page, page - 1),
        (0, 0),  // empty
        (4 * page, page),  // starts at the end
        (3 * page, 2 * page),  // runs past the end
        (0, 5 * page),
        (UInt64.max & ~(page - 1), page),  // end wraps to exactly 0
        (UInt64.max & ~(page - 1), 2 * page),  // end wraps to one page: inside the segment if unchecked
        (page, UInt64.max & ~(page - 1)),  // end wraps to 0
        (UInt64.max & ~(page - 1), UInt64.max & ~(page - 1)),
    ]

    @Test("Ranges inside the segment are recorded", arguments: rangesInside)
    func validRangeIsRecorded(_ offset: UInt64, _ length: UInt64) throws {
        var scene = try AttachScene()
        let record = try scene.registry.attach(scene.handle, offset: offset, length: length, by: scene.importer)
        #expect(record.client == scene.importer)
        #expect(record.handle == scene.handle)
        #expect(record.segment == scene.segment)
        #expect(record.offset == offset)
        #expect(record.length == length)
        #expect(record.access == .readWrite)
        #expect(scene.registry.attachments[record.id] == record)
        #expect(scene.registry.clients[scene.importer]?.attachments == [record.id])
    }

    @Test("Unaligned, empty, out-of-range and overflowing ranges are refused", arguments: rangesRefused)
    func invalidRangeIsRefused(_ offset: UInt64, _ length: UInt64) throws {
        var scene = try AttachScene()
        expectRefusal(.invalidArgument) { () throws(BrokerError) in
            try scene.registry.attach(scene.handle, offset: offset, length: length, by: scene.importer)
        }
        #expect(scene.registry.attachments.isEmpty)
    }

    @Test func attachmentRecordsTheGrantedAccess() throws {
        var scene = try AttachScene()
        let readOnly = try scene.registry.get(scene.segment, access: .readOnly, by: scene.importer).handle
        let record = try scene.registry.attach(readOnly, offset: 0, length: page, by: scene.importer)
        #expect(record.access == .readOnly)
    }

    @Test func handleOfAnotherClientIsNotFound() throws {
        var scene = try AttachScene()
        let intruder = scene.registry.connect(People.stranger, name: "intruder")
        let attachment = try scene.registry.attach(scene.handle, offset: 0, length: page, by: scene.importer)

        expectRefusal(.notFound) { () throws(BrokerError) in
            try scene.registry.attach(scene.handle, offset: 0, length: page, by: intruder)
        }
        expectRefusal(.notFound) { () throws(BrokerError) in try scene.registry.release(scene.handle, by: intruder) }
        expectRefusal(.notFound) { () throws(BrokerError) in try scene.registry.detach(attachment.id, by: intruder) }
        // Nothing the intruder tried touched the rightful holder's state.
        #expect(scene.registry.grants[scene.handle]?.client == scene.importer)
        #expect(scene.registry.attachments[attachment.id] == attachment)
        #expect(scene.registry.clients[intruder]?.attachments.isEmpty == true)
    }

    @Test func unknownHandleIsNotFound() throws {
        var scene = try AttachScene()
        expectRefusal(.notFound) { () throws(BrokerError) in
            try scene.registry.attach(AccessHandle(rawValue: 999), offset: 0, length: page, by: scene.importer)
        }
    }

    @Test func releaseDropsOnlyThatHandlesAttachments() throws {
        var scene = try AttachScene()
        let other = try scene.registry.get(scene.segment, access: .readOnly, by: scene.importer).handle
        let first = try scene.registry.attach(scene.handle, offset: 0, length: page, by: scene.importer)
        let second = try scene.registry.attach(scene.handle, offset: page, length: page, by: scene.importer)
        let kept = try scene.registry.attach(other, offset: 0, length: page, by: scene.importer)

        let dropped = try scene.registry.release(scene.handle, by: scene.importer)

        #expect(Set(dropped) == [first.id, second.id])
        #expect(Array(scene.registry.attachments.keys) == [kept.id])
        #expect(scene.registry.grants[scene.handle] == nil)
        #expect(scene.registry.clients[scene.importer]?.grants == [other])
        #expect(scene.registry.clients[scene.importer]?.attachments == [kept.id])
        expectRefusal(.notFound) { () throws(BrokerError) in
            try scene.registry.attach(scene.handle, offset: 0, length: page, by: scene.importer)
        }
        expectRefusal(.notFound) { () throws(BrokerError) in
            try scene.registry.release(scene.handle, by: scene.importer)
        }
    }

    @Test func detachForgetsOneAttachmentOnce() throws {
        var scene = try AttachScene()
        let first = try scene.registry.attach(scene.handle, offset: 0, length: page, by: scene.importer)
        let second = try scene.registry.attach(scene.handle, offset: 0, length: page, by: scene.importer)
        #expect(first.id != second.id)

        try scene.registry.detach(first.id, by: scene.importer)
        #expect(Array(scene.registry.attachments.keys) == [second.id])
        #expect(scene.registry.clients[scene.importer]?.attachments == [second.id])
        expectRefusal(.notFound) { () throws(BrokerError) in try scene.registry.detach(first.id, by: scene.importer) }
    }
}

struct RegistryRemoveTests {
    @Test func onlyTheOwnerConnectionMayRemove() throws {
        var scene = try AttachScene()
        // Same uid is not enough: removal belongs to the connection that made the segment.
        let sameUser = scene.registry.connect(People.ownerElsewhere, name: "sibling")
        let root = scene.registry.connect(People.superuser, name: "root")
        for client in [scene.importer, sameUser, root] {
            expectRefusal(.permissionDenied) { () throws(BrokerError) in
                try scene.registry.remove(scene.segment, by: client)
            }
        }
        #expect(scene.registry.segments[scene.segment] != nil)

        try scene.registry.remove(scene.segment, by: scene.owner)
        #expect(scene.registry.segments[scene.segment] == nil)
        #expect(scene.registry.clients[scene.owner]?.segments.isEmpty == true)
        expectRefusal(.notFound) { () throws(BrokerError) in try scene.registry.remove(scene.segment, by: scene.owner) }
    }

    @Test func removingAnUnknownSegmentIsNotFound() throws {
        var scene = try AttachScene()
        expectRefusal(.notFound) { () throws(BrokerError) in
            try scene.registry.remove(SegmentID(rawValue: 0xFEED), by: scene.owner)
        }
    }

    @Test func afterRemoveExistingGrantsCannotAttachButCanRelease() throws {
        var scene = try AttachScene()
        let earlier = try scene.registry.attach(scene.handle, offset: 0, length: page, by: scene.importer)
        try scene.registry.remove(scene.segment, by: scene.owner)

        expectRefusal(.notFound) { () throws(BrokerError) in
            try scene.registry.attach(scene.handle, offset: 0, length: page, by: scene.importer)
        }
        expectRefusal(.notFound) { () throws(BrokerError) in
            try scene.registry.get(scene.segment, access: .readOnly, by: scene.importer)
        }
        // The mapping made before the removal is still the importer's to give back.
        #expect(scene.registry.attachments[earlier.id] != nil)
        let dropped = try scene.registry.release(scene.handle, by: scene.importer)
        #expect(dropped == [earlier.id])
        #expect(scene.registry.grants.isEmpty)
        #expect(scene.registry.attachments.isEmpty)
    }
}
