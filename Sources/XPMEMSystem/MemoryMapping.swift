@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// Page protections for a mapping.
public struct MemoryProtection: OptionSet, Sendable {
    public let rawValue: CInt
    public init(rawValue: CInt) { self.rawValue = rawValue }
    public static let none = MemoryProtection([])
    public static let read = MemoryProtection(rawValue: PROT_READ)
    public static let write = MemoryProtection(rawValue: PROT_WRITE)
    public static let execute = MemoryProtection(rawValue: PROT_EXEC)
    public static let readWrite: MemoryProtection = [.read, .write]
}

/// Where a new mapping goes.
public enum MappingPlacement {
    /// Anywhere the kernel chooses.
    case anywhere
    /// Exactly here, failing with `EEXIST` if anything is mapped there (`MAP_FIXED_NOREPLACE`).
    case exactlyIfFree(UnsafeMutableRawPointer)
    /// Exactly here, replacing whatever was mapped (`MAP_FIXED`): only for ranges this process owns.
    case replacing(UnsafeMutableRawPointer)
}

/// A range of address space this process mapped: unmapped exactly once, by `unmap()` or on drop.
///
/// Sendable because it is unique (`~Copyable`): moving the one owner to another thread cannot race.
/// What the bytes hold is the user's business, as with any shared memory.
public struct MemoryMapping: ~Copyable, @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let length: Int

    private init(base: UnsafeMutableRawPointer, length: Int) {
        self.base = base
        self.length = length
    }

    /// The mapped bytes; valid while `self` is alive.
    public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: length) }

    /// Maps `length` bytes of `file` from `offset`, shared. The corresponding C function is `mmap`.
    public static func mapShared(
        _ file: borrowing OwnedDescriptor,
        offset: Int = 0,
        length: Int,
        protection: MemoryProtection,
        placement: MappingPlacement = .anywhere,
        populate: Bool = false
    ) throws(Errno) -> MemoryMapping {
        try map(file.rawValue, offset: offset, length: length, protection: protection,
                flags: MAP_SHARED | (populate ? cxpmem_MAP_POPULATE : 0), placement: placement)
    }

    /// Reserves `length` bytes of inaccessible private address space.
    public static func reserve(length: Int, placement: MappingPlacement = .anywhere) throws(Errno) -> MemoryMapping {
        try map(-1, offset: 0, length: length, protection: .none,
                flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, placement: placement)
    }

    /// Maps private anonymous zero-filled memory.
    public static func anonymous(length: Int, protection: MemoryProtection = .readWrite) throws(Errno) -> MemoryMapping {
        try map(-1, offset: 0, length: length, protection: protection, flags: MAP_PRIVATE | MAP_ANONYMOUS,
                placement: .anywhere)
    }

    private static func map(
        _ descriptor: CInt, offset: Int, length: Int, protection: MemoryProtection, flags: CInt,
        placement: MappingPlacement
    ) throws(Errno) -> MemoryMapping {
        guard length > 0 else { throw Errno.invalidArgument }
        var hint: UnsafeMutableRawPointer? = nil
        var allFlags = flags
        switch placement {
        case .anywhere: break
        case .exactlyIfFree(let address):
            hint = address
            allFlags |= cxpmem_MAP_FIXED_NOREPLACE
        case .replacing(let address):
            hint = address
            allFlags |= MAP_FIXED
        }
        guard let base = mmap(hint, length, protection.rawValue, allFlags, descriptor, off_t(offset)),
              base != MAP_FAILED
        else { throw Errno(rawValue: errno) }
        // Kernels before 4.17 ignore MAP_FIXED_NOREPLACE and treat the address as a hint.
        if let hint, base != hint {
            munmap(base, length)
            throw Errno.fileExists
        }
        return MemoryMapping(base: base, length: length)
    }

    /// Changes the protection of the whole mapping. The corresponding C function is `mprotect`.
    public func protect(_ protection: MemoryProtection) throws(Errno) {
        _ = try valueOrErrno { mprotect(base, length, protection.rawValue) }
    }

    /// Replaces `length` bytes from `offset` of this mapping with an inaccessible private reservation,
    /// so touching them faults while the addresses stay taken. The corresponding call is `mmap(MAP_FIXED)`.
    public func replaceWithReservation(offset: Int, length: Int) throws(Errno) {
        let address = try subrange(offset: offset, length: length)
        let result = mmap(address, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0)
        guard result != MAP_FAILED else { throw Errno(rawValue: errno) }
    }

    /// Maps `file` from `fileOffset` back over `length` bytes from `offset` of this mapping, shared.
    public func restoreFile(
        _ file: borrowing OwnedDescriptor, fileOffset: Int, offset: Int, length: Int, protection: MemoryProtection
    ) throws(Errno) {
        let address = try subrange(offset: offset, length: length)
        let result = mmap(address, length, protection.rawValue, MAP_SHARED | MAP_FIXED, file.rawValue, off_t(fileOffset))
        guard result != MAP_FAILED else { throw Errno(rawValue: errno) }
    }

    /// The address of a page-aligned part of this mapping, checked to lie inside it.
    private func subrange(offset: Int, length: Int) throws(Errno) -> UnsafeMutableRawPointer {
        guard offset >= 0, length > 0, offset <= self.length - length, isPageAligned(offset), isPageAligned(length) else {
            throw Errno.invalidArgument
        }
        return base + offset
    }

    /// Unmaps now. The corresponding C function is `munmap`.
    public consuming func unmap() {
        let (base, length) = (self.base, self.length)
        discard self
        MemoryMapping.unmapOnce(base, length)
    }

    /// Moves this mapping's pages to `address`, in place of whatever was mapped there (the same
    /// length; the old addresses become unmapped). The corresponding C function is
    /// `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)`. On failure the target is untouched and this mapping
    /// is unmapped.
    public consuming func move(replacing address: UnsafeMutableRawPointer) throws(Errno) -> MemoryMapping {
        let (base, length) = (self.base, self.length)
        discard self
        guard let moved = cxpmem_mremap_replacing(base, length, address), moved != MAP_FAILED else {
            let error = Errno(rawValue: errno)
            MemoryMapping.unmapOnce(base, length)
            throw error
        }
        return MemoryMapping(base: moved, length: length)
    }

    /// Gives up ownership without unmapping, when the range has become another owner's
    /// (for example after mapping a file over it with `.replacing`).
    public consuming func relinquish() -> UnsafeMutableRawBufferPointer {
        let bytes = self.bytes
        discard self
        return bytes
    }

    /// Takes ownership of a range this process mapped some other way.
    public static func adopting(_ bytes: UnsafeMutableRawBufferPointer) -> MemoryMapping {
        MemoryMapping(base: bytes.baseAddress!, length: bytes.count)
    }

    deinit { MemoryMapping.unmapOnce(base, length) }

    private static func unmapOnce(_ base: UnsafeMutableRawPointer, _ length: Int) {
        if munmap(base, length) == -1 { preconditionAcceptable(Errno(rawValue: errno), "munmap") }
    }
}
