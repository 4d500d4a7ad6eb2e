import Testing
import XPMEMBrokerCore
import XPMEMWire

private let wide = Permit(rawValue: 0o666)
private let narrow = Permit(rawValue: 0o600)
private let readableByAll = Permit(rawValue: 0o644)

/// An exporter with one 0666 window, `open`, on the file `first`, and a stranger (another uid,
/// another group) who has nothing yet.
struct ReachScene {
    var registry = makeRegistry()
    let owner: ClientID
    let stranger: ClientID
    let open: SegmentID
    let first = FileIdentity(device: 1, inode: 10)

    init() throws {
        owner = registry.connect(People.owner, name: "exporter")
        open = try registry.makeAddressSpace(by: owner, base: 0x10000, size: page, permit: wide, name: "open", file: first)
        stranger = registry.connect(People.stranger, name: "stranger")
    }

    /// Another window of the owner's, a page at `base`.
    @discardableResult
    mutating func window(_ permit: Permit, at base: UInt64, file: FileIdentity? = nil) throws(BrokerError) -> SegmentID {
        try registry.makeAddressSpace(by: owner, base: base, size: page, permit: permit, name: "window", file: file)
    }

    /// The stranger gets `open` and attaches its page: the file is handed over.
    @discardableResult
    mutating func strangerAttachesOpen(_ access: AccessMode) throws -> AccessHandle {
        let handle = try registry.get(open, access: access, by: stranger).handle
        _ = try registry.attach(handle, offset: 0, length: page, by: stranger)
        return handle
    }

    var recipients: [AddressSpaceFileReach.Recipient] { registry.clients[owner]?.addressSpaceReach.recipients ?? [] }
}

/// Windows of one address space share one file, and a descriptor of it reaches every window: the
/// file goes only to clients every window (and every removed one, while others live) allows, and no
/// window is made narrower than whom the file may already have reached.
struct RegistryAddressSpaceReachTests {
    @Test func aWindowIsRefusedToWhomAnotherWindowOfTheSameAddressSpaceDoesNotAllow() throws {
        var scene = try ReachScene()
        let secret = try scene.window(narrow, at: 0x20000)
        let refusal = expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try scene.registry.get(scene.open, access: .readOnly, by: scene.stranger)
        }
        // The refusal does not name the window the stranger may not see.
        #expect(refusal?.message.contains("another window") == true, "\(refusal?.message ?? "")")
        #expect(refusal?.message.contains("\(secret)") == false && refusal?.message.contains("0600") == false,
                "\(refusal?.message ?? "")")
        expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try scene.registry.get(secret, access: .readOnly, by: scene.stranger)
        }
        // Whom every window allows gets any of them: the owner's other processes, the superuser.
        let sameUser = scene.registry.connect(People.ownerElsewhere, name: "same user")
        _ = try scene.registry.get(scene.open, access: .readWrite, by: sameUser)
        let superuser = scene.registry.connect(People.superuser, name: "root")
        _ = try scene.registry.get(scene.open, access: .readWrite, by: superuser)
    }

    @Test func readOnlyIsEnoughWhereEveryWindowAllowsReading() throws {
        var scene = try ReachScene()
        try scene.window(readableByAll, at: 0x20000)
        _ = try scene.registry.get(scene.open, access: .readOnly, by: scene.stranger)
        expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try scene.registry.get(scene.open, access: .readWrite, by: scene.stranger)
        }
    }

    @Test func ordinarySegmentsAndOtherExportersDoNotNarrowAWindow() throws {
        var scene = try ReachScene()
        // A memfd segment of the same owner is a file of its own; another exporter's window, another file.
        _ = try scene.registry.make(by: scene.owner, size: page, permit: narrow, name: "memfd")
        let other = scene.registry.connect(People.groupMember, name: "other exporter")
        _ = try scene.registry.makeAddressSpace(by: other, base: 0x10000, size: page, permit: narrow, name: "theirs")
        _ = try scene.registry.get(scene.open, access: .readWrite, by: scene.stranger)
    }

    @Test func noNarrowerWindowOnceTheFileWentToSomeoneItWouldNotAllow() throws {
        var scene = try ReachScene()
        let handle = try scene.strangerAttachesOpen(.readWrite)
        let refusal = expectRefusal(.permissionDenied) { () throws(BrokerError) in try scene.window(narrow, at: 0x20000) }
        #expect(refusal?.message.contains("uid \(People.stranger.uid)") == true, "\(refusal?.message ?? "")")
        // Read-only is too narrow for a read-write recipient; what allows it is fine.
        expectRefusal(.permissionDenied) { () throws(BrokerError) in try scene.window(readableByAll, at: 0x20000) }
        try scene.window(Permit(rawValue: 0o606), at: 0x20000)
        // Releasing the grant does not take the descriptor back.
        try scene.registry.release(handle, by: scene.stranger)
        expectRefusal(.permissionDenied) { () throws(BrokerError) in try scene.window(narrow, at: 0x40000) }
    }

    @Test func aGrantFromBeforeANarrowerWindowDoesNotAttach() throws {
        var scene = try ReachScene()
        let handle = try scene.registry.get(scene.open, access: .readOnly, by: scene.stranger).handle
        // A grant hands nothing over: the narrower window can be made, and the attach is then refused.
        try scene.window(narrow, at: 0x20000)
        expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try scene.registry.attach(handle, offset: 0, length: page, by: scene.stranger)
        }
        #expect(scene.recipients.isEmpty)
    }

    @Test func aRemovedWindowStillCountsWhileOthersLive() throws {
        var scene = try ReachScene()
        let secret = try scene.window(narrow, at: 0x20000)
        expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try scene.registry.get(scene.open, access: .readOnly, by: scene.stranger)
        }
        // The secret window's memory stays in the file after its removal, while `open` lives.
        try scene.registry.remove(secret, by: scene.owner)
        let refusal = expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try scene.registry.get(scene.open, access: .readOnly, by: scene.stranger)
        }
        #expect(refusal?.message.contains("removed while others live") == true, "\(refusal?.message ?? "")")
        // Once the last window goes the library empties the file: a new window starts afresh.
        try scene.registry.remove(scene.open, by: scene.owner)
        let again = try scene.window(wide, at: 0x10000)
        _ = try scene.registry.get(again, access: .readWrite, by: scene.stranger)
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
        var scene = try ReachScene()
        let superuser = scene.registry.connect(People.superuser, name: "root")
        let rootHandle = try scene.registry.get(scene.open, access: .readWrite, by: superuser).handle
        _ = try scene.registry.attach(rootHandle, offset: 0, length: page, by: superuser)
        let ownHandle = try scene.registry.get(scene.open, access: .readWrite, by: scene.owner).handle
        _ = try scene.registry.attach(ownHandle, offset: 0, length: page, by: scene.owner)
        #expect(scene.recipients.isEmpty)
        try scene.window(narrow, at: 0x20000)
    }

    @Test func aReadOnlyRecipientAllowsWindowsThatLetItRead() throws {
        var scene = try ReachScene()
        try scene.strangerAttachesOpen(.readOnly)
        try scene.window(readableByAll, at: 0x20000)
        expectRefusal(.permissionDenied) { () throws(BrokerError) in try scene.window(narrow, at: 0x30000) }
    }

    @Test func aFreshFileAfterTheLastWindowStartsAfresh() throws {
        var scene = try ReachScene()
        try scene.strangerAttachesOpen(.readWrite)
        try scene.registry.remove(scene.open, by: scene.owner)
        // The same file again: the stranger may hold it.
        expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try scene.window(narrow, at: 0x20000, file: scene.first)
        }
        // A fresh file (the library's, after its last window went): nobody holds it.
        try scene.window(narrow, at: 0x20000, file: FileIdentity(device: 1, inode: 11))
        #expect(scene.recipients.isEmpty)
    }

    @Test func anotherFileWhileWindowsOnTheKnownOneLiveForgetsNothing() throws {
        var scene = try ReachScene()
        try scene.strangerAttachesOpen(.readWrite)
        // `open` still lives on the first file, which the stranger holds.
        expectRefusal(.permissionDenied) { () throws(BrokerError) in
            try scene.window(narrow, at: 0x20000, file: FileIdentity(device: 1, inode: 11))
        }
    }
}
