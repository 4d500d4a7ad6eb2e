@preconcurrency import Glibc
import SystemPackage

/// Runs a libc call that reports failure as -1 and errno, retrying on EINTR when asked.
///
/// Blocking calls retry by default; `close` must never come through here with retries on, because
/// Linux releases the descriptor even when close reports EINTR.
@inline(__always)
func valueOrErrno<T: FixedWidthInteger>(
    retryOnInterrupt: Bool = true,
    _ call: () -> T
) throws(Errno) -> T {
    while true {
        let result = call()
        if result != -1 { return result }
        let code = Errno(rawValue: errno)
        if retryOnInterrupt && code == .interrupted { continue }
        throw code
    }
}

/// Traps on an errno that can only mean a bug in this process (a descriptor or pointer we own is wrong).
@inline(__always)
func preconditionAcceptable(_ code: Errno, _ call: StaticString) {
    precondition(code != .badFileDescriptor && code != .badAddress, "\(call) on an owned resource failed: \(code)")
}

/// The size of a page on this machine.
public let pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))

/// Whether `value` is a multiple of the page size.
public func isPageAligned(_ value: Int) -> Bool { value & (pageSize - 1) == 0 }
