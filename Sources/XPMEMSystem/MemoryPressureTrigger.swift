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

    /// Arms a trigger on the memory pressure of this process's own cgroup (v2 `memory.pressure`: what
    /// a job in a container or a limited cgroup feels), else on the machine's (`/proc/pressure/memory`).
    public static func armForThisProcess() throws(Errno) -> OwnedDescriptor {
        if let path = ownCgroupPressurePath, let trigger = try? arm(path: path) { return trigger }
        return try arm()
    }

    /// This process's cgroup v2 `memory.pressure`, where it is in one and the cgroup2 file system is
    /// mounted; nil otherwise.
    public static var ownCgroupPressurePath: String? {
        guard let cgroups = try? AddressSpace.readWholeFile("/proc/self/cgroup"),
              let mounts = try? AddressSpace.readWholeFile("/proc/self/mountinfo") else { return nil }
        return cgroupPressurePath(cgroupFile: cgroups, mountinfo: mounts)
    }

    /// The `memory.pressure` path from `/proc/self/cgroup`'s text (its `0::` line: the v2 cgroup) and
    /// `/proc/self/mountinfo`'s (the first cgroup2 mount: its mount point, and its root, the part of
    /// the hierarchy it shows, which a container without a cgroup namespace does not start at `/`).
    public static func cgroupPressurePath(cgroupFile: String, mountinfo: String) -> String? {
        guard let line = cgroupFile.split(separator: "\n").first(where: { $0.hasPrefix("0::") }) else { return nil }
        var cgroup = String(line.dropFirst(3))
        guard cgroup.hasPrefix("/") else { return nil }
        // "ID PARENT MAJ:MIN ROOT MOUNT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER"
        guard let mount = mountinfo.split(separator: "\n").first(where: { $0.contains(" - cgroup2 ") }),
              case let fields = mount.split(separator: " "), fields.count > 4 else { return nil }
        let root = unescapedMountField(fields[3])
        if root != "/" {
            // Outside what the mount shows: no file of ours there.
            guard cgroup == root || cgroup.hasPrefix(root + "/") else { return nil }
            cgroup = String(cgroup.dropFirst(root.count))
        }
        return unescapedMountField(fields[4]) + (cgroup == "/" || cgroup.isEmpty ? "" : cgroup) + "/memory.pressure"
    }

    /// A path field of mountinfo as the path it is: the kernel writes a space, tab, newline or
    /// backslash in it as `\ooo` (three octal digits).
    static func unescapedMountField(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        var rest = Array(field.utf8)[...]
        while let byte = rest.popFirst() {
            let digits = rest.prefix(3)
            if byte == UInt8(ascii: "\\"), digits.count == 3, digits.allSatisfy({ (48...55).contains($0) }) {
                bytes.append(digits.reduce(0) { $0 &* 8 &+ ($1 - 48) })
                rest = rest.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
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
