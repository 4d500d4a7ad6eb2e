@preconcurrency import Glibc
import SystemPackage

/// The few path operations the broker, the launcher and the communicator need.
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

    /// Whether `path` is a file this process may execute.
    public static func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }

    /// Whether anything exists at `path`.
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// The directory of the running executable, from /proc/self/exe (argv[0] may be relative).
    public static func executableDirectory() -> String {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = buffer.withUnsafeMutableBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { readlink("/proc/self/exe", $0.baseAddress!, $0.count - 1) }
        }
        let path = count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : CommandLine.arguments[0]
        return directory(of: path) ?? "."
    }

    /// What `path` names its file in: everything before its last slash (empty for a file in `/`); nil
    /// for a path with no slash.
    public static func directory(of path: String) -> String? {
        path.lastIndex(of: "/").map { String(path[..<$0]) }
    }

    /// Creates a fresh private directory from a `mkdtemp` template ending in XXXXXX.
    public static func makeTemporaryDirectory(_ template: String) throws(Errno) -> String {
        var bytes = Array(template.utf8CString)
        guard let made = mkdtemp(&bytes) else { throw Errno(rawValue: errno) }
        return String(cString: made)
    }

    /// Removes a directory and the files in it (not recursive: it must hold no subdirectory).
    public static func removeFlatDirectory(_ path: String) {
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) {
                    String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
                }
                if name != "." && name != ".." { unlink("\(path)/\(name)") }
            }
            closedir(directory)
        }
        rmdir(path)
    }

    /// Removes an empty directory; false if it is not empty or not there.
    @discardableResult
    public static func removeEmptyDirectory(_ path: String) -> Bool { rmdir(path) == 0 }

    /// Writes `text` to `path` so that a reader sees the old content or all of the new, never a
    /// part: it goes to a temporary name beside it, then is renamed over it.
    public static func writeAtomically(_ text: String, to path: String, mode: mode_t = 0o600) throws(Errno) {
        let temporary = "\(path).\(getpid()).tmp"
        let descriptor = try valueOrErrno { open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        let writeError = errno
        close(descriptor)
        guard written == bytes.count else {
            unlink(temporary)
            throw Errno(rawValue: written < 0 ? writeError : EIO)
        }
        guard rename(temporary, path) == 0 else {
            let code = Errno(rawValue: errno)
            unlink(temporary)
            throw code
        }
    }

    /// The first `limit` bytes of a small file, or nil if it cannot be read.
    public static func readSmallFile(_ path: String, limit: Int = 4096) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var buffer = [UInt8](repeating: 0, count: limit)
        let count = read(descriptor, &buffer, buffer.count)
        guard count >= 0 else { return nil }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }

    /// Removes a file if it is there, ignoring every error (clean-up paths).
    public static func removeQuietly(_ path: String) { unlink(path) }
}
