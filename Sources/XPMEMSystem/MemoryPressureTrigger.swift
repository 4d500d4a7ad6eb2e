@preconcurrency import Glibc
import SystemPackage

/// A pressure-stall (PSI) trigger on the machine's memory: a descriptor that polls as `.priority`
/// when tasks stalled on memory for more than a threshold within a window, and otherwise costs
/// nothing. Closing it removes the trigger.
public enum MemoryPressureTrigger {
    /// Unprivileged processes may only use windows that are multiples of 2 s (Linux 6.5 and later):
    /// the first is for privileged ones, the second for everyone else.
    static let triggers = ["some 150000 1000000", "some 300000 2000000"]

    /// Arms a trigger on `path` (`/proc/pressure/memory`, or a cgroup's `memory.pressure`).
    /// Fails when the kernel has no PSI (`ENOENT`, or `EOPNOTSUPP` when booted with psi=0) or refuses
    /// every trigger. The corresponding C functions are `open` and `write`.
    public static func arm(path: String = "/proc/pressure/memory") throws(Errno) -> OwnedDescriptor {
        let file = OwnedDescriptor(adopting: try valueOrErrno { open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC) })
        var refusal = Errno.invalidArgument
        for trigger in triggers {
            let written = trigger.withCString { write(file.rawValue, $0, strlen($0) + 1) }
            if written >= 0 { return file }
            refusal = Errno(rawValue: errno)
            guard refusal == .invalidArgument || refusal == .notPermitted else { break }
        }
        throw refusal
    }

    /// Waits until `trigger` fires (true) or stops being able to (false: its cgroup went away). The
    /// corresponding C function is `poll` for `POLLPRI`.
    public static func wait(for trigger: borrowing OwnedDescriptor) -> Bool {
        while true {
            var request = pollfd(fd: trigger.rawValue, events: Int16(POLLPRI), revents: 0)
            if poll(&request, 1, -1) < 0 {
                if errno == EINTR { continue }
                return false
            }
            if request.revents & Int16(POLLERR | POLLNVAL) != 0 { return false }
            if request.revents & Int16(POLLPRI) != 0 { return true }
        }
    }
}
