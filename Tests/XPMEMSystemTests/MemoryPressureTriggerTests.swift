import Testing
import XPMEMSystem

/// Where a process's cgroup v2 memory pressure is read, from the texts of `/proc/self/cgroup` and
/// `/proc/self/mountinfo`, and the pool of hugetlb pages from `/proc/meminfo`.
struct MemoryPressureTriggerTests {
    static let mountinfo = """
        22 1 0:21 / /proc rw,nosuid - proc proc rw
        31 24 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
        35 24 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate
        """

    @Test("the 0:: line's cgroup under the first cgroup2 mount")
    func pathFromTheV2Line() {
        let cgroups = "12:memory:/user.slice\n0::/user.slice/job-7\n"
        #expect(MemoryPressureTrigger.cgroupPressurePath(cgroupFile: cgroups, mountinfo: Self.mountinfo)
                == "/sys/fs/cgroup/unified/user.slice/job-7/memory.pressure")
        #expect(MemoryPressureTrigger.cgroupPressurePath(cgroupFile: "0::/\n", mountinfo: Self.mountinfo)
                == "/sys/fs/cgroup/unified/memory.pressure")
    }

    @Test("a mount that shows only part of the hierarchy (a container's): the cgroup below its root")
    func pathBelowTheMountsRoot() {
        let mounted = "40 30 0:30 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
        #expect(MemoryPressureTrigger.cgroupPressurePath(cgroupFile: "0::/docker/abc/job\n", mountinfo: mounted)
                == "/sys/fs/cgroup/job/memory.pressure")
        #expect(MemoryPressureTrigger.cgroupPressurePath(cgroupFile: "0::/docker/abc\n", mountinfo: mounted)
                == "/sys/fs/cgroup/memory.pressure")
        #expect(MemoryPressureTrigger.cgroupPressurePath(cgroupFile: "0::/elsewhere\n", mountinfo: mounted) == nil)
    }

    @Test("a mount point and root with spaces, which mountinfo writes as octal escapes")
    func escapedMountFields() {
        let mounted = #"40 30 0:30 /job\040a /run/my\040cgroups\134v2 rw - cgroup2 cgroup2 rw"# + "\n"
        #expect(MemoryPressureTrigger.cgroupPressurePath(cgroupFile: "0::/job a/step\n", mountinfo: mounted)
                == "/run/my cgroups\\v2/step/memory.pressure")
    }

    @Test("no v2 cgroup, or no cgroup2 mount: no path")
    func noPathWithoutV2() {
        #expect(MemoryPressureTrigger.cgroupPressurePath(cgroupFile: "4:memory:/job\n", mountinfo: Self.mountinfo) == nil)
        let v1Only = "31 24 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        #expect(MemoryPressureTrigger.cgroupPressurePath(cgroupFile: "0::/job\n", mountinfo: v1Only) == nil)
    }

    @Test("the hugetlb pool: page size, pages, and those neither used nor reserved")
    func hugeTLBPool() throws {
        let meminfo = """
            MemTotal:       24684512 kB
            HugePages_Total:     160
            HugePages_Free:      100
            HugePages_Rsvd:       30
            HugePages_Surp:        0
            Hugepagesize:       2048 kB
            """
        let pool = try #require(HugeTLBPool(meminfo: meminfo))
        #expect(pool.pageSize == 2 << 20 && pool.totalPages == 160 && pool.availablePages == 70)
        #expect(HugeTLBPool(meminfo: "MemTotal: 1 kB\n") == nil)
    }
}
