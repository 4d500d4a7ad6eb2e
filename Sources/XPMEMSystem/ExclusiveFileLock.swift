@preconcurrency import Glibc
import SystemPackage

/// An exclusive `flock` on a file, held for as long as the value lives. The kernel releases it when
/// the holder dies, however it dies, so a lock file never goes stale.
public struct ExclusiveFileLock: ~Copyable, Sendable {
    private let file: OwnedDescriptor
    public let path: String

    /// Creates `path` if needed (mode 0600) and takes the lock without waiting. Fails with
    /// `Errno.wouldBlock` when another process holds it. The corresponding C functions are `open` and `flock`.
    public init(path: String) throws(Errno) {
        let raw = try valueOrErrno { open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600) }
        let file = OwnedDescriptor(adopting: raw)
        _ = try valueOrErrno { flock(file.rawValue, LOCK_EX | LOCK_NB) }
        self.file = file
        self.path = path
    }
}
