import Testing
import XPMEMBrokerCore
import XPMEMWire

/// Windows of one address space share one file, and a descriptor of it reaches every window: the
/// file goes only to clients every window (and every removed one, while others live) allows, and no
/// window is made narrower than whom the file may already have reached.
struct RegistryAddressSpaceReachTests {
    let wide = Permit(rawValue: 0o666)
    let narrow = Permit(rawValue: 0o600)
    let readableByAll = Permit(rawValue: 0o644)

    @Test func aWindowIsRefusedToWhomAnotherWindowOfTheSameAddressSpaceDoesNotAllow() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let open = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "open")
        let secret = try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: narrow, name: "secret")
        let stranger = registry.connect(People.stranger, name: "stranger")
        let refusal = expectRefusal(.permissionDenied) { () throws(BrokerError) in try registry.get(open, access: .readOnly, by: stranger) }
        // The refusal does not name the window the stranger may not see.
        #expect(refusal?.message.contains("another window") == true, "\(refusal?.message ?? "")")
        #expect(refusal?.message.contains("\(secret)") == false && refusal?.message.contains("0600") == false,
                "\(refusal?.message ?? "")")
        expectRefusal(.permissionDenied) { () throws(BrokerError) in try registry.get(secret, access: .readOnly, by: stranger) }
        // Whom every window allows gets any of them: the owner's other processes, the superuser.
        let sameUser = registry.connect(People.ownerElsewhere, name: "same user")
        _ = try registry.get(open, access: .readWrite, by: sameUser)
        let superuser = registry.connect(People.superuser, name: "root")
        _ = try registry.get(open, access: .readWrite, by: superuser)
    }

    @Test func readOnlyIsEnoughWhereEveryWindowAllowsReading() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let open = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "open")
        _ = try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: readableByAll, name: "readable")
        let stranger = registry.connect(People.stranger, name: "stranger")
        _ = try registry.get(open, access: .readOnly, by: stranger)
        expectRefusal(.permissionDenied) { () throws(BrokerError) in try registry.get(open, access: .readWrite, by: stranger) }
    }

    @Test func ordinarySegmentsAndOtherExportersDoNotNarrowAWindow() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let open = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "open")
        // A memfd segment of the same owner is a file of its own; another exporter's window, another file.
        _ = try registry.make(by: owner, size: page, permit: narrow, name: "memfd")
        let other = registry.connect(People.groupMember, name: "other exporter")
        _ = try registry.makeAddressSpace(by: other, base: 0x10000, size: page, permit: narrow, name: "theirs")
        let stranger = registry.connect(People.stranger, name: "stranger")
        _ = try registry.get(open, access: .readWrite, by: stranger)
    }

    @Test func noNarrowerWindowOnceTheFileWentToSomeoneItWouldNotAllow() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let open = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "open")
        let stranger = registry.connect(People.stranger, name: "stranger")
        let handle = try registry.get(open, access: .readWrite, by: stranger).handle
        _ = try registry.attach(handle, offset: 0, length: page, by: stranger)
        let refusal = expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: narrow, name: "secret")
        }
        #expect(refusal?.message.contains("uid \(People.stranger.uid)") == true, "\(refusal?.message ?? "")")
        // Read-only is too narrow for a read-write recipient; what allows it is fine.
        expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: readableByAll, name: "read")
        }
        _ = try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: Permit(rawValue: 0o606), name: "ok")
        // Releasing the grant does not take the descriptor back.
        try registry.release(handle, by: stranger)
        expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try registry.makeAddressSpace(by: owner, base: 0x40000, size: page, permit: narrow, name: "still")
        }
    }

    @Test func aGrantFromBeforeANarrowerWindowDoesNotAttach() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let open = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "open")
        let stranger = registry.connect(People.stranger, name: "stranger")
        let handle = try registry.get(open, access: .readOnly, by: stranger).handle
        // A grant hands nothing over: the narrower window can be made, and the attach is then refused.
        _ = try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: narrow, name: "secret")
        expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try registry.attach(handle, offset: 0, length: page, by: stranger)
        }
        #expect(registry.clients[owner]?.addressSpaceReach.recipients.isEmpty == true)
    }

    @Test func aRemovedWindowStillCountsWhileOthersLive() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let open = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "open")
        let secret = try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: narrow, name: "secret")
        let stranger = registry.connect(People.stranger, name: "stranger")
        expectRefusal(.permissionDenied) { () throws(BrokerError) in try registry.get(open, access: .readOnly, by: stranger) }
        // The secret window's memory stays in the file after its removal, while `open` lives.
        try registry.remove(secret, by: owner)
        let refusal = expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try registry.get(open, access: .readOnly, by: stranger)
        }
        #expect(refusal?.message.contains("removed while others live") == true, "\(refusal?.message ?? "")")
        // Once the last window goes the library empties the file: a new window starts afresh.
        try registry.remove(open, by: owner)
        let again = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "again")
        _ = try registry.get(again, access: .readWrite, by: stranger)
    }

    @Test func aWindowRegisteredAgainAfterARestartSetsAFloorForNewOnes() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        // Registered again under its old id: whom it allowed may hold the file from before.
        _ = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "open",
                                          id: SegmentID(rawValue: 77), reregistration: true)
        let refusal = expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: narrow, name: "secret")
        }
        #expect(refusal?.message.contains("registered again") == true, "\(refusal?.message ?? "")")
        // Windows of that earlier life come back in any order, whatever their modes.
        _ = try registry.makeAddressSpace(by: owner, base: 0x30000, size: page, permit: narrow, name: "old secret",
                                          id: SegmentID(rawValue: 78), reregistration: true)
        _ = try registry.makeAddressSpace(by: owner, base: 0x40000, size: page, permit: wide, name: "wide again")
    }

    @Test func theSuperuserAndTheOwnersOwnAttachesNarrowNothing() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let open = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "open")
        let superuser = registry.connect(People.superuser, name: "root")
        let rootHandle = try registry.get(open, access: .readWrite, by: superuser).handle
        _ = try registry.attach(rootHandle, offset: 0, length: page, by: superuser)
        let ownHandle = try registry.get(open, access: .readWrite, by: owner).handle
        _ = try registry.attach(ownHandle, offset: 0, length: page, by: owner)
        #expect(registry.clients[owner]?.addressSpaceReach.recipients.isEmpty == true)
        _ = try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: narrow, name: "secret")
    }

    @Test func aReadOnlyRecipientAllowsWindowsThatLetItRead() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let open = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "open")
        let stranger = registry.connect(People.stranger, name: "stranger")
        let handle = try registry.get(open, access: .readOnly, by: stranger).handle
        _ = try registry.attach(handle, offset: 0, length: page, by: stranger)
        _ = try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: readableByAll, name: "readable")
        expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try registry.makeAddressSpace(by: owner, base: 0x30000, size: page, permit: narrow, name: "secret")
        }
    }

    @Test func aFreshFileAfterTheLastWindowStartsAfresh() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let first = FileIdentity(device: 1, inode: 10)
        let open = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "open",
                                                 file: first)
        let stranger = registry.connect(People.stranger, name: "stranger")
        let handle = try registry.get(open, access: .readWrite, by: stranger).handle
        _ = try registry.attach(handle, offset: 0, length: page, by: stranger)
        try registry.remove(open, by: owner)
        // The same file again: the stranger may hold it.
        expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: narrow, name: "secret", file: first)
        }
        // A fresh file (the library's, after its last window went): nobody holds it.
        _ = try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: narrow, name: "secret",
                                          file: FileIdentity(device: 1, inode: 11))
        #expect(registry.clients[owner]?.addressSpaceReach.recipients.isEmpty == true)
    }

    @Test func anotherFileWhileWindowsOnTheKnownOneLiveForgetsNothing() throws {
        var registry = makeRegistry()
        let owner = registry.connect(People.owner, name: "exporter")
        let first = FileIdentity(device: 1, inode: 10)
        let open = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "open",
                                                 file: first)
        let stranger = registry.connect(People.stranger, name: "stranger")
        let handle = try registry.get(open, access: .readWrite, by: stranger).handle
        _ = try registry.attach(handle, offset: 0, length: page, by: stranger)
        // `open` still lives on the first file, which the stranger holds.
        expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try registry.makeAddressSpace(by: owner, base: 0x20000, size: page, permit: narrow, name: "secret",
                                          file: FileIdentity(device: 1, inode: 11))
        }
    }
}
