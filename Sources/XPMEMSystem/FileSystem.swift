@preconcurrency import Glibc
import SystemPackage

/// The few path operations the broker needs around its socket.
public enum FileSystem {
    /// Creates `path` with `mode` if missing; an existing directory must be owned by us and not
    /// writable by others, or a different user could swap the socket under us.
    public static func ensurePrivateDirectory(_ path: String, mode: mode_t = 0o700) throws(Errno) {
        if mkdir(path, mode) == 0 { return }
        let code = Errno(rawValue: errno)
        guard code == .fileExists else { throw code }
        var info = stat()
        _ = try valueOrErrno { lstat(path, &info) }
        guard info.st_mode & S_IFMT == S_IFDIR, info.st_uid == getuid(), info.st_mode & 0o022 == 0 else {
            throw Errno.permissionDenied
        }
    }

    /// Removes a file, ignoring one that is already gone.
    public static func unlinkIfPresent(_ path: String) throws(Errno) {
        if unlink(path) == 0 { return }
        let code = Errno(rawValue: errno)
        if code != .noSuchFileOrDirectory { throw code }
    }

    /// Whether `path` names a socket file.
    public static func isSocket(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFSOCK
    }

    public static func setMode(_ path: String, _ mode: mode_t) throws(Errno) {
        _ = try valueOrErrno { chmod(path, mode) }
    }

    public static func setGroup(_ path: String, _ group: gid_t) throws(Errno) {
        _ = try valueOrErrno { chown(path, uid_t.max, group) }
    }

    /// The gid of a group name, or of a numeric string.
    public static func groupID(named name: String) -> gid_t? {
        if let number = gid_t(name) { return number }
        guard let entry = getgrnam(name) else { return nil }
        return entry.pointee.gr_gid
    }

    /// How many descriptors this process has open (entries of `/proc/self/fd`, less the one used to list it).
    public static func openDescriptorCount() -> Int {
        guard let directory = opendir("/proc/self/fd") else { return -1 }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let first = withUnsafeBytes(of: entry.pointee.d_name) { $0[0] }
            if first != UInt8(ascii: ".") { count += 1 }
        }
        return count - 1
    }
}
