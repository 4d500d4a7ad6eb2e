@preconcurrency import Glibc
import SystemPackage

/// This process's limit on open descriptors (`RLIMIT_NOFILE`).
public enum DescriptorLimit {
    /// Raises the soft limit to the hard one and returns the limit now in force. The corresponding C
    /// functions are `getrlimit` and `setrlimit`.
    @discardableResult
    public static func raiseToMaximum() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return limit.rlim_cur == rlim_t.max ? Int(Int32.max) : Int(clamping: limit.rlim_cur)
    }

    /// Raises the soft limit, and the hard one too when it is lower (which needs `CAP_SYS_RESOURCE`,
    /// up to `fs.nr_open`), to at least `wanted`; returns the soft limit now in force. Children started
    /// afterwards inherit it.
    @discardableResult
    public static func raise(toAtLeast wanted: Int) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        let target = rlim_t(wanted)
        if limit.rlim_cur < target {
            var raised = limit
            raised.rlim_cur = target
            raised.rlim_max = max(limit.rlim_max, target)
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return wanted }
        }
        return raiseToMaximum()
    }

    /// Lowers the soft limit (tests use it to run the broker out of descriptors quickly).
    public static func setSoftLimit(_ value: Int) throws(Errno) {
        var limit = rlimit()
        _ = try valueOrErrno { getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }
        limit.rlim_cur = rlim_t(value)
        _ = try valueOrErrno { setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }
    }

    /// A descriptor held in reserve: when `accept` fails for lack of descriptors, closing it lets the
    /// waiting connection be accepted and closed instead of left pending, which would wake the event
    /// loop again and again. The corresponding C function is `open("/dev/null")`.
    public static func reserve() throws(Errno) -> OwnedDescriptor {
        OwnedDescriptor(adopting: try valueOrErrno { open("/dev/null", O_RDONLY | O_CLOEXEC) })
    }
}
