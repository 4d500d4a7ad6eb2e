@preconcurrency import Glibc

/// Facts about, and small requests of, the running process that code above this layer needs:
/// its environment and identity, and giving up the CPU.
public enum ThisProcess {
    /// An environment variable's value, or nil if unset. The corresponding C function is `getenv`.
    public static func environment(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }

    /// This process's id. The corresponding C function is `getpid`.
    public static var processID: Int { Int(getpid()) }
    public static var parentID: Int { Int(getppid()) }
    public static var userID: Int { Int(getuid()) }

    /// Lets another runnable thread have this CPU. The corresponding C function is `sched_yield`.
    public static func yieldProcessor() { sched_yield() }

    /// How many processors are online. The corresponding C function is `sysconf(_SC_NPROCESSORS_ONLN)`.
    public static var onlineProcessors: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// The machine's memory in bytes. The corresponding C function is `sysconf(_SC_PHYS_PAGES)`.
    public static var physicalMemoryBytes: Int { max(0, sysconf(Int32(_SC_PHYS_PAGES))) * max(1, sysconf(Int32(_SC_PAGESIZE))) }

    /// The unit of the CPU times in /proc/PID/stat. The corresponding C function is `sysconf(_SC_CLK_TCK)`.
    public static var clockTicksPerSecond: Int { max(1, sysconf(Int32(_SC_CLK_TCK))) }

    /// Sleeps at least `microseconds`. The corresponding C function is `usleep`.
    public static func sleep(microseconds: Int) { usleep(useconds_t(max(0, microseconds))) }
}
