@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// File seals (`F_SEAL_*`): restrictions on a memfd's inode that apply to every descriptor of it.
public struct FileSeals: OptionSet, Sendable {
    public let rawValue: CInt
    public init(rawValue: CInt) { self.rawValue = rawValue }
    public static let seal = FileSeals(rawValue: cxpmem_F_SEAL_SEAL)
    public static let shrink = FileSeals(rawValue: cxpmem_F_SEAL_SHRINK)
    public static let grow = FileSeals(rawValue: cxpmem_F_SEAL_GROW)
    public static let write = FileSeals(rawValue: cxpmem_F_SEAL_WRITE)
    public static let futureWrite = FileSeals(rawValue: cxpmem_F_SEAL_FUTURE_WRITE)
    /// What every segment's memfd carries: nobody may truncate it under the processes mapping it.
    public static let fixedSize: FileSeals = [.shrink, .grow]
}

/// Operations on memory-backed files (memfd) through an owned descriptor.
public enum MemoryFile {
    /// Creates a sealable, close-on-exec memfd of `size` bytes. The corresponding C function is `memfd_create`.
    /// - Parameter hugeTLB: take its pages from the hugetlb pool (`MFD_HUGETLB`, the pool's default
    ///   page size): `size`, and every mapping's offset and length, must then be multiples of it.
    public static func create(name: String, size: Int, hugeTLB: Bool = false) throws(Errno) -> OwnedDescriptor {
        let raw = try valueOrErrno {
            cxpmem_memfd_create(name, cxpmem_MFD_CLOEXEC | cxpmem_MFD_ALLOW_SEALING | (hugeTLB ? cxpmem_MFD_HUGETLB : 0))
        }
        let file = OwnedDescriptor(adopting: raw)
        _ = try valueOrErrno { ftruncate(file.rawValue, off_t(size)) }
        return file
    }

    /// The seals in force. Fails with `EINVAL` when the file is not a memfd (or other sealable shmem).
    public static func seals(of file: borrowing OwnedDescriptor) throws(Errno) -> FileSeals {
        FileSeals(rawValue: try valueOrErrno { fcntl(file.rawValue, cxpmem_F_GET_SEALS) })
    }

    /// Adds seals; needs a descriptor open for writing. The corresponding C call is `fcntl(F_ADD_SEALS)`.
    public static func addSeals(_ seals: FileSeals, to file: borrowing OwnedDescriptor) throws(Errno) {
        _ = try valueOrErrno { fcntl(file.rawValue, cxpmem_F_ADD_SEALS, seals.rawValue) }
    }

    /// Sets the inode's permission bits. The corresponding C function is `fchmod`.
    public static func setMode(_ mode: mode_t, of file: borrowing OwnedDescriptor) throws(Errno) {
        _ = try valueOrErrno { fchmod(file.rawValue, mode) }
    }

    /// Opens the same file again through `/proc/self/fd` with the given access mode; this is how a
    /// read-only descriptor of a memfd is made. The inode's mode bits are checked, as for any open.
    public static func reopen(_ file: borrowing OwnedDescriptor, flags: CInt) throws(Errno) -> OwnedDescriptor {
        let raw = try valueOrErrno { open("/proc/self/fd/\(file.rawValue)", flags | O_CLOEXEC) }
        return OwnedDescriptor(adopting: raw)
    }

    /// A read-only descriptor of the same file (see `reopen`): what an importer that may only read is given.
    public static func reopenReadOnly(_ file: borrowing OwnedDescriptor) throws(Errno) -> OwnedDescriptor {
        try reopen(file, flags: O_RDONLY)
    }

    /// The ranges of the first `length` bytes of `file` that hold data (have pages), in order; holes
    /// read as zeros without any page. The corresponding C function is `lseek(SEEK_DATA / SEEK_HOLE)`.
    public static func dataExtents(of file: borrowing OwnedDescriptor, length: Int) throws(Errno) -> [Range<Int>] {
        var extents: [Range<Int>] = []
        var cursor = 0
        while cursor < length {
            let data = lseek(file.rawValue, off_t(cursor), cxpmem_SEEK_DATA)
            if data < 0 {
                if errno == ENXIO { break }  // nothing but holes from `cursor` on
                throw Errno(rawValue: errno)
            }
            guard Int(data) < length else { break }
            let hole = try valueOrErrno { lseek(file.rawValue, data, cxpmem_SEEK_HOLE) }
            extents.append(Int(data)..<min(Int(hole), length))
            cursor = Int(hole)
        }
        return extents
    }

    /// Copies the first `length` bytes of a hugetlb file into `destination`, one of the file's pages of
    /// `pageSize` bytes (or 2 MiB of one) at a time, skipping those that read as zeros (holes among them: `pread` of a
    /// hugetlbfs hole gives zeros without allocating a page, where touching it through a mapping would
    /// take one from the pool). hugetlbfs has no `SEEK_DATA`, which `dataExtents` needs.
    public static func copyNonZeroPages(
        of file: borrowing OwnedDescriptor, length: Int, pageSize: Int, into destination: UnsafeMutableRawPointer
    ) throws(Errno) {
        // At most 2 MiB at a time, whatever the page size (1 GiB pages exist).
        let piece = min(pageSize, 2 << 20)
        let bounce = UnsafeMutableRawBufferPointer.allocate(byteCount: piece, alignment: 4096)
        defer { bounce.deallocate() }
        var offset = 0
        while offset < length {
            let chunk = min(piece, length - offset)
            var filled = 0
            while filled < chunk {
                let read = pread(file.rawValue, bounce.baseAddress! + filled, chunk - filled, off_t(offset + filled))
                if read < 0, errno == EINTR { continue }
                guard read > 0 else { throw read < 0 ? Errno(rawValue: errno) : Errno.ioError }
                filled += read
            }
            let page = UnsafeRawBufferPointer(rebasing: bounce[0..<chunk])
            if !isAllZero(page) { (destination + offset).copyMemory(from: page.baseAddress!, byteCount: chunk) }
            offset += chunk
        }
    }

    /// Copies `length` bytes from `source` to `destination` in pieces of `pageSize`, skipping pieces
    /// that are all zeros (so that a destination file gets no page for them).
    public static func copyNonZeroPages(
        from source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer, length: Int, pageSize: Int
    ) {
        for offset in stride(from: 0, to: length, by: pageSize) {
            let piece = UnsafeRawBufferPointer(start: source + offset, count: min(pageSize, length - offset))
            if !isAllZero(piece) { (destination + offset).copyMemory(from: piece.baseAddress!, byteCount: piece.count) }
        }
    }

    /// Gives every page of `range` of the file a page now (`fallocate`), so that writing there through
    /// a mapping cannot fail later; a hugetlb file short of pool pages fails here with `ENOSPC`.
    public static func allocatePages(of file: borrowing OwnedDescriptor, in range: Range<Int>) throws(Errno) {
        guard !range.isEmpty else { return }
        _ = try valueOrErrno { cxpmem_allocate_pages(file.rawValue, off_t(range.lowerBound), off_t(range.count)) }
    }

    /// Word by word where it can: pages are large.
    private static func isAllZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let words = bytes.count / 8
        let base = bytes.baseAddress!
        for index in 0..<words where base.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self) != 0 { return false }
        for index in (words * 8)..<bytes.count where bytes[index] != 0 { return false }
        return true
    }

    /// Frees the file's pages in `range` (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): the file keeps its
    /// size, and every process mapping those pages reads zeros there from then on.
    public static func dropPages(of file: borrowing OwnedDescriptor, in range: Range<UInt64>) throws(Errno) {
        guard !range.isEmpty else { return }
        guard range.upperBound <= UInt64(Int64.max) else { throw Errno.invalidArgument }
        _ = try valueOrErrno {
            cxpmem_punch_hole(file.rawValue, off_t(range.lowerBound), off_t(range.upperBound - range.lowerBound))
        }
    }

    /// The file's name as `/proc/self/fd` shows it (`/memfd:NAME (deleted)` for a memfd); nil when it
    /// cannot be read. The corresponding C function is `readlink`.
    public static func name(of file: borrowing OwnedDescriptor) -> String? {
        var buffer = [CChar](repeating: 0, count: 512)
        let length = readlink("/proc/self/fd/\(file.rawValue)", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
