@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// A userfaultfd in minor- and missing-fault mode for shared memory: while a range is registered and
/// its page table entries dropped, a thread of this process that touches it (a page the file has, or
/// one it lacks) sleeps in the kernel until it is woken and retries. The pages themselves stay in the
/// memfd the whole time.
///
/// Nothing ever reads the descriptor: the fault messages just queue, and the wake at the end is what
/// ends a sleep (unregistering a range registered for missing faults wakes it too; the explicit
/// `UFFDIO_WAKE` after it covers minor-only registrations). Opened with `UFFD_USER_MODE_ONLY`, so
/// unprivileged processes may use it; the price is that the kernel's own accesses to the range (a
/// `read(2)` into it, a `write(2)` from it, a futex in it), to pages the file has or lacks alike, fail
/// with `EFAULT` instead of sleeping.
public struct UserFaultDescriptor: ~Copyable, Sendable {
    private let descriptor: OwnedDescriptor

    /// Fails when the kernel lacks userfaultfd or `UFFD_FEATURE_MINOR_SHMEM`, or forbids it.
    /// The corresponding system call is `userfaultfd`.
    public init() throws(Errno) {
        descriptor = OwnedDescriptor(adopting: try valueOrErrno { cxpmem_uffd_open() })
    }

    /// Makes touches of a shared mapping this process may write sleep: registers it for minor faults
    /// (and for missing ones, so that a page the file lacks is not allocated by a touch meanwhile),
    /// then drops this process's page table entries (`MADV_DONTNEED`; the memfd keeps the pages).
    /// Registering first means no touch can slip in between. Undone by `resumeAccess`.
    ///
    /// The kernel refuses (`EPERM`) a mapping whose file was opened read-only: registering needs
    /// `VM_MAYWRITE`. Use `suspendReadOnlyAccess` for those.
    public func suspendAccess(at address: UnsafeMutableRawPointer, length: Int) throws(Errno) {
        _ = try valueOrErrno { cxpmem_uffd_register_suspend(descriptor.rawValue, address, length) }
        _ = try valueOrErrno { madvise(address, length, MADV_DONTNEED) }
    }

    /// Lets the range be touched again and wakes the threads that slept on it (the explicit wake is
    /// for minor-only registrations: unregistering alone does not wake those sleepers).
    public func resumeAccess(at address: UnsafeMutableRawPointer, length: Int) throws(Errno) {
        _ = try valueOrErrno { cxpmem_uffd_unregister(descriptor.rawValue, address, length) }
        try wake(at: address, length: length)
    }

    /// Makes touches of a shared read-only mapping of `file` sleep, where `suspendAccess` is refused.
    ///
    /// The private view is `MAP_NORESERVE`: read-only, it is never written, so it needs none of the
    /// copy-on-write room a private mapping otherwise reserves (for a hugetlb file, a pool page per
    /// huge page, which a pool sized for its segments does not have).
    ///
    /// The range is replaced by a *private* read-only mapping of the same file pages: a private
    /// mapping may be registered (it has `VM_MAYWRITE`), and until something writes to it, which
    /// `PROT_READ` forbids, its pages are the file's very pages. It is registered for minor faults
    /// and its page table entries dropped, as in `suspendAccess`. A touch in the instant between the
    /// replacement and the registration reads the file's current bytes, which is still correct: the
    /// exporter changes nothing before every importer has acknowledged. (An anonymous mapping
    /// registered for missing faults would also put touches to sleep, but a touch in that instant
    /// maps the zero page, and the reader sees zeros for the rest of the window.)
    ///
    /// If this throws, the range may be left mapped privately and readable: replace it.
    /// Undone by `resumeReadOnlyAccess`.
    public func suspendReadOnlyAccess(
        at address: UnsafeMutableRawPointer, length: Int, file: borrowing OwnedDescriptor, fileOffset: Int
    ) throws(Errno) {
        try Self.mapReadOnly(file, fileOffset: fileOffset, at: address, length: length, flags: MAP_PRIVATE | MAP_NORESERVE)
        try suspendAccess(at: address, length: length)
    }

    /// Maps `file` back, shared and read-only, over a range `suspendReadOnlyAccess` suspended (which
    /// drops the private mapping and its registration with it), then wakes the sleepers, which retry
    /// and find the file's pages.
    public func resumeReadOnlyAccess(
        at address: UnsafeMutableRawPointer, length: Int, file: borrowing OwnedDescriptor, fileOffset: Int
    ) throws(Errno) {
        try Self.mapReadOnly(file, fileOffset: fileOffset, at: address, length: length, flags: MAP_SHARED)
        try wake(at: address, length: length)
    }

    /// Whether `suspendReadOnlyAccess` works for mappings of `file` on this kernel: registers a
    /// private read-only scratch mapping of one page of it (one of the file's pages: a hugetlb file's
    /// are huge, and registering less than one is refused), then unmaps that (which ends the
    /// registration). Touches no mapping of the caller's.
    public func canSuspendReadOnlyAccess(to file: borrowing OwnedDescriptor, fileOffset: Int) -> Bool {
        let length = (try? FileFacts(of: file)).map { Int($0.pageSize) } ?? pageSize
        guard let scratch = mmap(nil, length, PROT_READ, MAP_PRIVATE | MAP_NORESERVE, file.rawValue, off_t(fileOffset)),
              scratch != MAP_FAILED
        else { return false }
        defer { munmap(scratch, length) }
        return cxpmem_uffd_register_suspend(descriptor.rawValue, scratch, length) == 0
    }

    /// Wakes threads sleeping on the range (after it was replaced, they fault for real).
    public func wake(at address: UnsafeMutableRawPointer, length: Int) throws(Errno) {
        _ = try valueOrErrno { cxpmem_uffd_wake(descriptor.rawValue, address, length) }
    }

    /// `mmap(MAP_FIXED)` of `file` over a range this process owns.
    private static func mapReadOnly(
        _ file: borrowing OwnedDescriptor, fileOffset: Int, at address: UnsafeMutableRawPointer, length: Int,
        flags: CInt
    ) throws(Errno) {
        guard isPageAligned(Int(bitPattern: address)), isPageAligned(length), length > 0 else {
            throw Errno.invalidArgument
        }
        let mapped = mmap(address, length, PROT_READ, flags | MAP_FIXED, file.rawValue, off_t(fileOffset))
        guard mapped != MAP_FAILED else { throw Errno(rawValue: errno) }
    }
}
