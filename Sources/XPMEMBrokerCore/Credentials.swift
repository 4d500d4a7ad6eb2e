/// Who a client is, as the kernel vouched for it when it connected (`SO_PEERCRED`, `SO_PEERGROUPS`).
public struct Credentials: Equatable, Sendable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    public var supplementaryGroups: [UInt32]

    public init(pid: Int32, uid: UInt32, gid: UInt32, supplementaryGroups: [UInt32] = []) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.supplementaryGroups = supplementaryGroups
    }

    /// Whether the client belongs to `group`, as primary or supplementary group.
    public func isMember(of group: UInt32) -> Bool { gid == group || supplementaryGroups.contains(group) }

    /// The superuser, who passes every permission check (like `CAP_IPC_OWNER` for System V IPC).
    public var isSuperuser: Bool { uid == 0 }
}
