@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// A userfaultfd in write-protect mode on shared memory (Linux 5.19 and later): a thread that writes
/// a protected page of a registered mapping sleeps in the kernel until the protection is lifted,
/// and the write is reported first (`nextWriteFault`). This is how a free-page hint learns of every
/// write its pages get from this process, before the write lands: unlike soft-dirty bits, which
/// only say afterwards that a page was written, the writer waits while the decision is made.
///
/// Pages never populated are protected too (the kernel keeps a marker in their page-table entry),
/// and so are pages whose memory was freed meanwhile (`fallocate(PUNCH_HOLE)` keeps the marker).
/// Writes through another process's mapping of the same file are not seen: they are its page
/// tables.
public struct WriteProtection: ~Copyable, Sendable {
    private let descriptor: OwnedDescriptor
    private let stopSignal: OwnedDescriptor
    /// Whether writes the kernel makes for this process (`read(2)` into a protected page) wait and
    /// are reported too. False when only a user-mode-only userfaultfd was allowed (unprivileged, and
    /// `vm.unprivileged_userfaultfd` is 0): such a system call then fails with `EFAULT`.
    public let catchesKernelWrites: Bool

    /// Fails when the kernel lacks shmem write-protection (`EOPNOTSUPP`) or userfaultfd is forbidden.
    /// The corresponding C functions are `userfaultfd` (or `/dev/userfaultfd`) and `eventfd`.
    public init() throws(Errno) {
        var kernelWrites: CInt = 0
        let descriptor = OwnedDescriptor(adopting: try valueOrErrno { cxpmem_uffd_open_write_tracking(&kernelWrites) })
        let stopSignal = OwnedDescriptor(adopting: try valueOrErrno { cxpmem_stop_signal_open() })
        self.descriptor = descriptor
        self.stopSignal = stopSignal
        catchesKernelWrites = kernelWrites != 0
    }

    /// Registers a shared mapping (page-aligned) for write protection; nothing is protected yet.
    public func register(at address: UnsafeMutableRawPointer, length: Int) throws(Errno) {
        _ = try valueOrErrno { cxpmem_uffd_register_write_protect(descriptor.rawValue, address, length) }
    }

    /// Protects a page-aligned range of a registered mapping: the next write to each page waits.
    public func protect(at address: UnsafeMutableRawPointer, length: Int) throws(Errno) {
        _ = try valueOrErrno { cxpmem_uffd_write_protect(descriptor.rawValue, address, length, 1) }
    }

    /// Lifts the protection of a range and wakes the writers waiting on it. Where the range is no
    /// longer registered (its mapping was replaced), the writers are woken all the same: they retry
    /// on whatever is mapped there now.
    public func unprotect(at address: UnsafeMutableRawPointer, length: Int) {
        if cxpmem_uffd_write_protect(descriptor.rawValue, address, length, 0) != 0 {
            _ = cxpmem_uffd_wake(descriptor.rawValue, address, length)
        }
    }

    /// Ends the registration of a range: its protection goes, and the writers waiting on it are woken.
    public func unregister(at address: UnsafeMutableRawPointer, length: Int) {
        _ = cxpmem_uffd_unregister(descriptor.rawValue, address, length)
        _ = cxpmem_uffd_wake(descriptor.rawValue, address, length)
    }

    /// Waits for the next write to a protected page and returns its address; nil once `stop()` was
    /// called. Only one thread should wait.
    public func nextWriteFault() throws(Errno) -> UInt? {
        var address: UInt64 = 0
        let result = try valueOrErrno { cxpmem_uffd_next_write_fault(descriptor.rawValue, stopSignal.rawValue, &address) }
        return result == 0 ? nil : UInt(address)
    }

    /// Makes `nextWriteFault` return nil, now or at its next call.
    public func stop() {
        var one: UInt64 = 1
        _ = write(stopSignal.rawValue, &one, MemoryLayout<UInt64>.size)
    }
}
