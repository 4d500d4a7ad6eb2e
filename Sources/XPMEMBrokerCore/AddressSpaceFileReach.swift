import XPMEMWire

/// Whom an exporter's address-space file may already have reached, and so whom its windows must allow.
///
/// Every window of an address space is a range of one file, and a descriptor of the file reaches all
/// of it: whatever the exporter backed for any window (the others, its stack and heap once a peer
/// attached them). A descriptor once handed cannot be taken back, and it outlives the grant it came
/// with. So the file goes only to a client that every window allows, and that every window removed
/// while others live allows too, since the removed window's memory stays in the file
/// (`Registry.get`, `Registry.attach`); and a new window must allow everyone the file may have
/// reached (`Registry.register`): the clients it went to in this broker's life, and anyone a window
/// registered again after a restart of the broker allowed, since who got the file in that earlier
/// life is not known.
public struct AddressSpaceFileReach: Equatable, Sendable {
    public struct Recipient: Equatable, Sendable {
        public var uid: UInt32
        public var gid: UInt32
        public var supplementaryGroups: [UInt32]
        public var access: AccessMode

        var credentials: Credentials {
            Credentials(pid: 0, uid: uid, gid: gid, supplementaryGroups: supplementaryGroups)
        }

        func sameIdentity(as other: Self) -> Bool {
            uid == other.uid && gid == other.gid && supplementaryGroups == other.supplementaryGroups
        }
    }

    /// Clients the file went to in this broker's life (differing only in pid: one entry).
    public private(set) var recipients: [Recipient] = []
    /// The modes of removed windows whose memory may still be in the file: until the last window goes.
    public private(set) var retiredPermits: [Permit] = []
    /// The modes of windows registered again after a restart of the broker.
    public private(set) var reclaimedPermits: [Permit] = []
    /// The file all this is about. The exporter's library starts a fresh one after its last window
    /// goes (the old one emptied): nobody holds that one yet.
    public private(set) var file: FileIdentity? = nil

    public init() {}

    /// A window is being registered on `file` (nil: not told). A file other than the known one starts
    /// afresh, unless windows on the known one still live (`knownFileInUse`): then what the known file
    /// reached still counts, for both.
    mutating func windowRegistered(on file: FileIdentity?, knownFileInUse: Bool) {
        guard let file else { return }
        if let known = self.file, known != file {
            if knownFileInUse { return }
            self = AddressSpaceFileReach()
        }
        self.file = file
    }

    /// The file went to `credentials` with `access` (read-write covers read-only).
    mutating func handed(to credentials: Credentials, access: AccessMode) {
        guard !credentials.isSuperuser else { return }
        let recipient = Recipient(uid: credentials.uid, gid: credentials.gid,
                                  supplementaryGroups: credentials.supplementaryGroups, access: access)
        if let index = recipients.firstIndex(where: { $0.sameIdentity(as: recipient) }) {
            if access == .readWrite { recipients[index].access = .readWrite }
        } else {
            recipients.append(recipient)
        }
    }

    mutating func windowReclaimed(_ permit: Permit) {
        if !reclaimedPermits.contains(permit) { reclaimedPermits.append(permit) }
    }

    /// A window was removed; `windowsLeft` of the address space remain. With none left the exporter's
    /// library makes its memory private again and empties the file.
    mutating func windowRemoved(_ permit: Permit, windowsLeft: Int) {
        if windowsLeft == 0 {
            retiredPermits = []
        } else if !retiredPermits.contains(permit) {
            retiredPermits.append(permit)
        }
    }

    /// Why a window with `permit`, owned by `owner`, cannot be registered; nil when it can. A window
    /// registered again restores what was, so only whom the file went to since counts for it.
    func refusal(ofWindow permit: Permit, owner: Credentials, reregistration: Bool) -> String? {
        if let refused = recipients.first(where: {
            !PermissionPolicy.allows($0.credentials, access: $0.access, owner: owner, permit: permit)
        }) {
            return "this address space's file was already handed \(refused.access) to uid \(refused.uid), which mode \(permit) does not allow"
        }
        // Mode bits that include a reclaimed window's allow everyone it allowed.
        if !reregistration, let floor = reclaimedPermits.first(where: { permit.rawValue & $0.rawValue != $0.rawValue }) {
            return "a window with mode \(floor) was registered again after a restart of the broker, and whom it allowed may hold the file from before; mode \(permit) does not allow all of them"
        }
        return nil
    }
}
