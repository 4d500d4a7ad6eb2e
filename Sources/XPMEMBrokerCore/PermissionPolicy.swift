import XPMEMWire

/// Decides whether a client may `get` a segment, with System V IPC semantics: the owner's bits apply
/// to the owner's uid, the group bits to members of the owner's group, the other bits to everyone else;
/// the superuser passes. Read needs the 4 bit of the applicable class, read-write needs 4 and 2.
public enum PermissionPolicy {
    public static func allows(
        _ requester: Credentials, access: AccessMode, owner: Credentials, permit: Permit
    ) -> Bool {
        if requester.isSuperuser { return true }
        let bits: UInt32
        if requester.uid == owner.uid {
            bits = (permit.rawValue >> 6) & 0o7
        } else if requester.isMember(of: owner.gid) {
            bits = (permit.rawValue >> 3) & 0o7
        } else {
            bits = permit.rawValue & 0o7
        }
        let needed: UInt32 = access == .readOnly ? 0o4 : 0o6
        return bits & needed == needed
    }
}
