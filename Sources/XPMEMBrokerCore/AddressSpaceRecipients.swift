import XPMEMWire

/// Who has been handed an exporter's address-space file, and how.
///
/// Every window of an address space is a range of one file, and a descriptor of the file reaches all
/// of it: whatever the exporter backed for any window (the others, its stack and heap once a peer
/// attached them). So the file may go only to a client every window permits (`Registry.get`), and a
/// window may be made only if it permits everyone the file already went to
/// (`Registry.makeAddressSpace`): a descriptor once handed cannot be taken back, and it outlives the
/// grant it came with. Kept per exporter; recipients differing only in pid are one entry.
public struct AddressSpaceRecipients: Equatable, Sendable {
    public struct Recipient: Equatable, Sendable {
        public var uid: UInt32
        public var gid: UInt32
        public var supplementaryGroups: [UInt32]
        public var access: AccessMode

        var credentials: Credentials {
            Credentials(pid: 0, uid: uid, gid: gid, supplementaryGroups: supplementaryGroups)
        }
    }

    public private(set) var recipients: [Recipient] = []

    public init() {}

    /// Notes that the file went to `credentials` with `access` (read-write covers read-only).
    mutating func record(_ credentials: Credentials, access: AccessMode) {
        guard !credentials.isSuperuser else { return }
        let recipient = Recipient(uid: credentials.uid, gid: credentials.gid,
                                  supplementaryGroups: credentials.supplementaryGroups, access: access)
        if let index = recipients.firstIndex(where: { $0.same(as: recipient) }) {
            if access == .readWrite { recipients[index].access = .readWrite }
        } else {
            recipients.append(recipient)
        }
    }

    /// The first recipient a window with `permit`, owned by `owner`, would not allow what it was handed.
    func firstNotPermitted(by permit: Permit, owner: Credentials) -> Recipient? {
        recipients.first { !PermissionPolicy.allows($0.credentials, access: $0.access, owner: owner, permit: permit) }
    }
}

extension AddressSpaceRecipients.Recipient {
    func same(as other: Self) -> Bool {
        uid == other.uid && gid == other.gid && supplementaryGroups == other.supplementaryGroups
    }
}
