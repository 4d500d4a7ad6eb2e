@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// A userfaultfd in minor-fault mode for shared memory: while a range is registered and its page
/// table entries dropped, a thread of this process that touches it sleeps in the kernel until the
/// range is unregistered and woken. The pages themselves stay in the memfd the whole time.
///
/// Opened with `UFFD_USER_MODE_ONLY`, so unprivileged processes may use it; the price is that the
/// kernel's own accesses (`read(2)` into the range, say) fail with `EFAULT` instead of sleeping.
public struct UserFaultDescriptor: ~Copyable, Sendable {
    private let descriptor: OwnedDescriptor

    /// Fails when the kernel lacks userfaultfd or `UFFD_FEATURE_MINOR_SHMEM`, or forbids it.
    /// The corresponding system call is `userfaultfd`.
    public init() throws(Errno) {
        descriptor = OwnedDescriptor(adopting: try valueOrErrno { cxpmem_uffd_open() })
    }

    /// Makes touches of the range sleep: registers it for minor faults, then drops this process's
    /// page table entries (`MADV_DONTNEED`; the memfd keeps the pages). Registering first means no
    /// touch can slip in between.
    public func suspendAccess(at address: UnsafeMutableRawPointer, length: Int) throws(Errno) {
        _ = try valueOrErrno { cxpmem_uffd_register_minor(descriptor.rawValue, address, length) }
        _ = try valueOrErrno { madvise(address, length, MADV_DONTNEED) }
    }

    /// Lets the range be touched again and wakes the threads that slept on it. Unregistering alone
    /// does not wake sleepers; the explicit wake does.
    public func resumeAccess(at address: UnsafeMutableRawPointer, length: Int) throws(Errno) {
        _ = try valueOrErrno { cxpmem_uffd_unregister(descriptor.rawValue, address, length) }
        try wake(at: address, length: length)
    }

    /// Wakes threads sleeping on the range (after it was replaced, they fault for real).
    public func wake(at address: UnsafeMutableRawPointer, length: Int) throws(Errno) {
        _ = try valueOrErrno { cxpmem_uffd_wake(descriptor.rawValue, address, length) }
    }
}
