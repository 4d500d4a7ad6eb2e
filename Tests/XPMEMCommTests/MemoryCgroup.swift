@preconcurrency import Glibc
import Foundation

/// A memory cgroup of a test's own (root only): v2 with the memory controller where the machine
/// offers it (its limit is `memory.high`: reclaim and stalls, never the OOM killer), else v1
/// (`memory.limit_in_bytes`). Removed by `remove()` once its processes have exited.
struct MemoryCgroup {
    let directory: String
    let limitFile: String
    let isVersion2: Bool

    /// Makes one, or says why there is none to make.
    static func make(limit: Int) -> Result<MemoryCgroup, CgroupUnavailable> {
        guard geteuid() == 0 else { return .failure(CgroupUnavailable("not root: creating a memory cgroup needs root")) }
        let name = "xpmem-swift-test-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
        var made: MemoryCgroup?
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        where (try? String(contentsOfFile: root + "/cgroup.controllers", encoding: .utf8))?.contains("memory") == true {
            _ = write("+memory", to: root + "/cgroup.subtree_control")
            let directory = root + "/" + name
            if mkdir(directory, 0o755) == 0 {
                made = MemoryCgroup(directory: directory, limitFile: directory + "/memory.high", isVersion2: true)
                break
            }
        }
        if made == nil, access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0 {
            let directory = "/sys/fs/cgroup/memory/" + name
            guard mkdir(directory, 0o755) == 0 else {
                return .failure(CgroupUnavailable("cannot create \(directory): errno \(errno)"))
            }
            made = MemoryCgroup(directory: directory, limitFile: directory + "/memory.limit_in_bytes", isVersion2: false)
        }
        guard let made else {
            return .failure(CgroupUnavailable("no cgroup v2 memory controller and no cgroup v1 memory hierarchy"))
        }
        guard write("\(limit)", to: made.limitFile) else {
            made.remove()
            return .failure(CgroupUnavailable("cannot write \(made.limitFile)"))
        }
        return .success(made)
    }

    func add(_ pid: pid_t) -> Bool { Self.write("\(pid)", to: directory + "/cgroup.procs") }

    func remove() {
        // Its processes have exited; the kernel may take a moment to let go of the last one.
        for _ in 0..<200 {
            guard rmdir(directory) != 0, errno == EBUSY else { return }
            usleep(50_000)
        }
    }

    private static func write(_ text: String, to path: String) -> Bool {
        let descriptor = open(path, O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        return text.withCString { Glibc.write(descriptor, $0, strlen($0)) } == text.utf8.count
    }
}

struct CgroupUnavailable: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
