@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// Process-level calls: pidfds, signal descriptors, randomness and cross-process reads.
public enum ProcessHandle {
    /// The CPU a process last ran on (field 39 of /proc/PID/stat), or nil if it cannot be read.
    public static func lastCPU(of pid: pid_t) -> Int? {
        guard let text = FileSystem.readSmallFile("/proc/\(pid)/stat") else { return nil }
        // Field 2, the command name, may hold spaces and parentheses: count from the last ')'.
        guard let nameEnd = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: nameEnd)...].split(separator: " ")
        // fields[0] is field 3 (the state), so field 39 is fields[36].
        return fields.count > 36 ? Int(fields[36]) : nil
    }

    /// A pidfd for `pid`: it becomes readable when the process exits, and unlike a pid it cannot be
    /// recycled. The corresponding system call is `pidfd_open`.
    public static func open(pid: pid_t) throws(Errno) -> OwnedDescriptor {
        OwnedDescriptor(adopting: try valueOrErrno { cxpmem_pidfd_open(pid) })
    }

    /// Blocks `signals` for this thread (and threads it starts) and returns a non-blocking signalfd
    /// that receives them. The corresponding C function is `signalfd`.
    public static func signalDescriptor(for signals: [CInt]) throws(Errno) -> OwnedDescriptor {
        let raw = try signals.withUnsafeBufferPointer { buffer throws(Errno) in
            try valueOrErrno { cxpmem_signalfd_for(buffer.baseAddress, CInt(buffer.count)) }
        }
        return OwnedDescriptor(adopting: raw)
    }

    /// The next pending signal on a signalfd, or nil when none is pending.
    public static func nextSignal(on descriptor: borrowing OwnedDescriptor) throws(Errno) -> CInt? {
        let signal = try valueOrErrno { cxpmem_signalfd_read(descriptor.rawValue) }
        return signal == 0 ? nil : signal
    }

    /// A random 64-bit value from the kernel's CSPRNG. The corresponding C function is `getrandom`.
    public static func randomUInt64() throws(Errno) -> UInt64 {
        var value: UInt64 = 0
        let count = try withUnsafeMutableBytes(of: &value) { bytes throws(Errno) in
            try valueOrErrno { cxpmem_getrandom(bytes.baseAddress, bytes.count) }
        }
        guard count == MemoryLayout<UInt64>.size else { throw Errno.ioError }
        return value
    }

    /// Copies `destination.count` bytes from `address` in process `pid` (a copy, subject to ptrace rules).
    /// The corresponding C function is `process_vm_readv`.
    public static func readMemory(
        of pid: pid_t, at address: UInt, into destination: UnsafeMutableRawBufferPointer
    ) throws(Errno) -> Int {
        try valueOrErrno {
            cxpmem_process_vm_readv(pid, destination.baseAddress, destination.count, UnsafeRawPointer(bitPattern: address))
        }
    }
}
