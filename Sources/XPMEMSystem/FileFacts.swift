@preconcurrency import Glibc
import SystemPackage

/// What `fstat` and `F_GETFL` say about an open file, for checking a descriptor a peer sent.
public struct FileFacts: Equatable, Sendable {
    /// How a descriptor was opened.
    public enum Access: Equatable, Sendable {
        case readOnly
        case writeOnly
        case readWrite
    }

    public var device: UInt64
    public var inode: UInt64
    public var size: UInt64
    /// The inode's permission bits (0o777 at most).
    public var permissions: UInt32
    public var access: Access
    /// The size of the file's pages: the base page size for a memfd, the huge page size for a hugetlb
    /// one (`st_blksize`, which hugetlbfs sets to its page size). Mappings of the file must be
    /// aligned to it.
    public var pageSize: UInt64

    /// Whether two descriptors refer to the same file.
    public func isSameFile(as other: FileFacts) -> Bool { device == other.device && inode == other.inode }

    /// The facts of `file`. The corresponding C calls are `fstat` and `fcntl(F_GETFL)`.
    public init(of file: borrowing OwnedDescriptor) throws(Errno) {
        let info = try file.status()
        let flags = try file.statusFlags()
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = UInt64(max(info.st_size, 0))
        permissions = UInt32(info.st_mode) & 0o777
        pageSize = UInt64(max(Int(info.st_blksize), XPMEMSystem.pageSize))
        switch flags & O_ACCMODE {
        case O_RDONLY: access = .readOnly
        case O_WRONLY: access = .writeOnly
        default: access = .readWrite
        }
    }
}

extension MemoryFile {
    /// Opens the same file again, read-write, through `/proc/self/fd` (its own open file description).
    public static func reopenReadWrite(_ file: borrowing OwnedDescriptor) throws(Errno) -> OwnedDescriptor {
        try reopen(file, flags: O_RDWR)
    }
}
