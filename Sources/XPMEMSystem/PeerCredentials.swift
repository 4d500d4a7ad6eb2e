@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// Who is at the other end of a connected Unix socket, as the kernel recorded it at `connect`.
public struct PeerCredentials: Sendable, Equatable {
    public var pid: pid_t
    public var uid: uid_t
    public var gid: gid_t
    /// Supplementary groups (`SO_PEERGROUPS`).
    public var groups: [gid_t]

    public init(pid: pid_t, uid: uid_t, gid: gid_t, groups: [gid_t]) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }

    /// Reads `SO_PEERCRED` and `SO_PEERGROUPS` of `socket`.
    public static func of(_ socket: borrowing OwnedDescriptor) throws(Errno) -> PeerCredentials {
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
        _ = try valueOrErrno { cxpmem_peer_credentials(socket.rawValue, &pid, &uid, &gid) }
        var groups = [gid_t](repeating: 0, count: 256)
        let count = groups.withUnsafeMutableBufferPointer { buffer in
            cxpmem_peer_groups(socket.rawValue, buffer.baseAddress!, CInt(buffer.count))
        }
        groups = count > 0 ? Array(groups.prefix(Int(count))) : []
        return PeerCredentials(pid: pid, uid: uid, gid: gid, groups: groups)
    }
}
