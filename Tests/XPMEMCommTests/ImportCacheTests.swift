@preconcurrency import Glibc
import Foundation
import Testing
import XPMEM
import XPMEMSystem
import XPMEMWire
@testable import XPMEMComm

/// The communicator's attachment cache with a real broker: its bounds by windows and by bytes, LRU
/// order, memory pressure, and never taking away what the current operation or the application holds.
@Suite(.serialized) struct ImportCacheTests {
    static let segmentSize = 64 << 10

    /// A broker, an exporter with `count` segments (segment N's bytes all N + 1), and an importer
    /// connection for the cache.
    private struct Fixture {
        let broker: PrivateBroker
        let exporter: XPMEMBroker
        let importer: XPMEMBroker
        let segments: [ExportedSegment]
        var ids: [SegmentID] { segments.map(\.id) }

        init(count: Int) throws {
            broker = try PrivateBroker()
            let exporter = try XPMEMBroker.connect(socketPath: broker.socketPath, name: "cache test exporter")
            self.exporter = exporter
            importer = try XPMEMBroker.connect(socketPath: broker.socketPath, name: "cache test importer")
            segments = try (0..<count).map { index in
                let segment = try exporter.makeSegment(size: ImportCacheTests.segmentSize)
                segment.bytes.initializeMemory(as: UInt8.self, repeating: UInt8(index + 1))
                return segment
            }
        }
    }

    /// Uses `ids` one per operation, as a rank's receives would.
    private func useOnePerOperation(_ cache: ImportCache, _ ids: [SegmentID]) throws {
        for id in ids {
            cache.operationBoundary()
            _ = try cache.bytes(of: id)
        }
    }

    @Test func theColdestWindowsGoToStayWithinTheCount() throws {
        let fixture = try Fixture(count: 5)
        let cache = ImportCache(broker: fixture.importer, bounds: AttachCacheBounds(entries: 3, bytes: 1 << 40),
                                pressure: MemoryPressureWatch(watchingTheKernel: false))
        try useOnePerOperation(cache, fixture.ids)
        var statistics = cache.statistics
        #expect(statistics.entries == 3 && statistics.capacityEvictions == 2 && statistics.misses == 5)
        // The three most recent are hits; the first two were evicted (and attach again).
        try useOnePerOperation(cache, Array(fixture.ids[2...]))
        #expect(cache.statistics.hits == 3)
        try useOnePerOperation(cache, [fixture.ids[0]])
        statistics = cache.statistics
        #expect(statistics.misses == 6 && statistics.entries == 3)
        let bytes = try cache.bytes(of: fixture.ids[0])
        #expect(bytes.allSatisfy { $0 == 1 }, "a window attached again shows its segment's bytes")
        cache.removeAll()
    }

    @Test func theBytesBoundHoldsToo() throws {
        let fixture = try Fixture(count: 4)
        let cache = ImportCache(broker: fixture.importer,
                                bounds: AttachCacheBounds(entries: 100, bytes: 2 * Self.segmentSize),
                                pressure: MemoryPressureWatch(watchingTheKernel: false))
        try useOnePerOperation(cache, fixture.ids)
        let statistics = cache.statistics
        #expect(statistics.bytes <= 2 * Self.segmentSize && statistics.entries == 2 && statistics.capacityEvictions == 2)
        cache.removeAll()
    }

    @Test func windowsOfTheCurrentOperationStayBeyondTheBoundUntilItEnds() throws {
        let fixture = try Fixture(count: 3)
        let cache = ImportCache(broker: fixture.importer, bounds: AttachCacheBounds(entries: 1, bytes: 1 << 40),
                                pressure: MemoryPressureWatch(watchingTheKernel: false))
        cache.operationBoundary()
        let held = try fixture.ids.map { try cache.bytes(of: $0) }
        #expect(cache.statistics.entries == 3 && cache.statistics.capacityEvictions == 0)
        for (index, bytes) in held.enumerated() {
            #expect(bytes.allSatisfy { $0 == UInt8(index + 1) }, "window \(index) of the current operation went")
        }
        cache.operationBoundary()
        #expect(cache.statistics.entries == 1 && cache.statistics.capacityEvictions == 2)
        #expect(try cache.bytes(of: fixture.ids[2]).allSatisfy { $0 == 3 }, "the most recent window was not kept")
        #expect(cache.statistics.hits == 1)
        cache.removeAll()
    }

    @Test func aWindowHandedToTheApplicationStaysThroughBoundsAndPressureUntilItsSenderFreesIt() throws {
        let fixture = try Fixture(count: 4)
        let pressure = MemoryPressureWatch(watchingTheKernel: false)
        let cache = ImportCache(broker: fixture.importer, bounds: AttachCacheBounds(entries: 3, bytes: 1 << 40),
                                pressure: pressure)
        cache.operationBoundary()
        let pinned = try cache.pin(fixture.ids[3])
        // It becomes the coldest window; the bound of three then has one too many.
        try useOnePerOperation(cache, Array(fixture.ids[0..<3]))
        cache.operationBoundary()
        #expect(cache.statistics.entries == 3 && cache.statistics.capacityEvictions == 1)
        for _ in 0..<4 {
            pressure.simulateEvent()
            cache.operationBoundary()
        }
        #expect(cache.statistics.pressureEvictions == 2 && cache.statistics.entries == 1)
        #expect(pinned.allSatisfy { $0 == 4 }, "the pinned window was taken away")
        // Its sender frees it: the entry goes stale, and goes at the next operation.
        try fixture.segments[3].remove()
        #expect(cache.statistics.invalidated == 1)
        cache.operationBoundary()
        #expect(cache.statistics.entries == 0 && cache.statistics.pressureEvictions == 2)
        cache.removeAll()
    }

    @Test func pressureShrinksTheCacheAQuarterAtATimeAndNothingWithoutIt() throws {
        let fixture = try Fixture(count: 8)
        let pressure = MemoryPressureWatch(watchingTheKernel: false)
        let cache = ImportCache(broker: fixture.importer, bounds: AttachCacheBounds(entries: 100, bytes: 1 << 40),
                                pressure: pressure)
        try useOnePerOperation(cache, fixture.ids)
        for _ in 0..<10 { cache.operationBoundary() }
        #expect(cache.statistics.entries == 8 && cache.statistics.pressureEvictions == 0,
                "the cache shrank without pressure")
        pressure.simulateEvent()
        cache.operationBoundary()
        #expect(cache.statistics.entries == 6 && cache.statistics.pressureEvictions == 2)
        // The coldest went: the first two used.
        try useOnePerOperation(cache, Array(fixture.ids[2...]))
        #expect(cache.statistics.hits == 6 && cache.statistics.misses == 8)
        pressure.simulateEvent()
        cache.operationBoundary()
        #expect(cache.statistics.entries == 4 && cache.statistics.pressureEvictions == 4)
        cache.removeAll()
    }

    @Test func anIdleRankGivesBackUnderPressureAndTheCurrentOperationKeepsWhatItUses() throws {
        let fixture = try Fixture(count: 8)
        let pressure = MemoryPressureWatch(watchingTheKernel: false)
        let cache = ImportCache(broker: fixture.importer, bounds: AttachCacheBounds(entries: 100, bytes: 1 << 40),
                                pressure: pressure)
        try useOnePerOperation(cache, fixture.ids)
        // Idle: no operation boundary comes, and the event alone shrinks the cache.
        pressure.simulateEvent()
        #expect(cache.statistics.entries == 6 && cache.statistics.pressureEvictions == 2)
        // The boundary after it does not act on the same event again.
        cache.operationBoundary()
        #expect(cache.statistics.entries == 6 && cache.statistics.pressureEvictions == 2)
        // Mid-operation: what the operation holds stays, whatever the pressure.
        let held = try fixture.ids[2...].map { try cache.bytes(of: $0) }
        for _ in 0..<3 { pressure.simulateEvent() }
        #expect(cache.statistics.entries == 6 && cache.statistics.pressureEvictions == 2)
        for (index, bytes) in held.enumerated() {
            #expect(bytes.allSatisfy { $0 == UInt8(index + 3) }, "window \(index + 2) of the current operation went")
        }
        cache.operationBoundary()
        pressure.simulateEvent()
        #expect(cache.statistics.entries == 4 && cache.statistics.pressureEvictions == 4)
        cache.removeAll()
    }

    /// Whether the kernel takes a memory pressure trigger here (root sets the shortest window).
    static var kernelReportsPressure: Bool { (try? MemoryPressureTrigger.arm()) != nil }

    @Test("under real memory pressure (a process stalling in a small memory cgroup) the cache gives back idle windows while the rank is idle, and keeps what it holds",
          .enabled(if: geteuid() == 0, "creating a memory cgroup needs root"),
          .enabled(if: kernelReportsPressure, "the kernel takes no memory pressure trigger (no PSI)"))
    func realPressureShrinksAnIdleCache() throws {
        let fixture = try Fixture(count: 24)
        let cgroup = try MemoryCgroup.make(limit: 80 << 20).get()
        defer { cgroup.remove() }
        // The pressure made in the cgroup, as a rank in it would see it: its own v2 memory.pressure,
        // or, in cgroup v1, the machine's (v1 has no per-cgroup file).
        let watch = MemoryPressureWatch(triggerPath: cgroup.isVersion2 ? cgroup.directory + "/memory.pressure"
                                                                      : "/proc/pressure/memory")
        let cache = ImportCache(broker: fixture.importer, bounds: AttachCacheBounds(entries: 100, bytes: 1 << 40),
                                pressure: watch)
        try useOnePerOperation(cache, Array(fixture.ids[0..<20]))
        cache.operationBoundary()
        let pinned = try cache.pin(fixture.ids[20])
        let held = try fixture.ids[21...].map { try cache.bytes(of: $0) }
        #expect(cache.statistics.entries == 24 && cache.statistics.pressureEvictions == 0)

        // The pressure: as libxpmem's test makes it, a process keeping 56 MiB in an 80 MiB cgroup
        // while four threads read a sparse file many times the room left (see the probe).
        let file = "/var/tmp/xpmem-swift-pressure-\(getpid())"
        defer { unlink(file) }
        try Self.makeSparseFile(file, megabytes: 1024)
        let child = try PipedChild(path: FileSystem.executableDirectory() + "/xpmem-probe",
                                   ["memory-pressure", "--anonymous-mib", "56", "--file", file, "--readers", "4"])
        defer {
            child.signal(.kill)
            _ = child.wait(timeout: .seconds(30))
        }
        #expect(cgroup.add(child.pid), "could not move the pressing process into \(cgroup.directory)")
        #expect(child.send("go"))
        #expect(child.readLine(timeout: .seconds(60)) == "pressing")
        // The rank is idle: no operation boundary, no call into the cache. Only the watch acts.
        let deadline = ContinuousClock.now + .seconds(120)
        while cache.statistics.pressureEvictions == 0, ContinuousClock.now < deadline {
            usleep(50_000)
        }
        let statistics = cache.statistics
        #expect(statistics.pressureEvictions > 0, "no window was given back under pressure within 120 s (\(watch.events) pressure events)")
        #expect(statistics.entries == 24 - statistics.pressureEvictions)
        #expect(pinned.allSatisfy { $0 == 21 }, "the pinned window was taken away")
        for (index, bytes) in held.enumerated() {
            #expect(bytes.allSatisfy { $0 == UInt8(index + 22) }, "window \(index + 21) of the current operation went")
        }
        // What went comes back on its next use.
        cache.operationBoundary()
        #expect(try cache.bytes(of: fixture.ids[0]).allSatisfy { $0 == 1 })
        cache.removeAll()
    }

    /// A sparse file of `megabytes` MiB: reading it fills the page cache with no disk read.
    private static func makeSparseFile(_ path: String, megabytes: Int) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw CgroupUnavailable("cannot create \(path)") }
        defer { close(descriptor) }
        guard ftruncate(descriptor, off_t(megabytes) << 20) == 0 else {
            throw CgroupUnavailable("cannot size \(path)")
        }
    }

    @Test func theCountersReachTheBrokersClientListing() throws {
        let fixture = try Fixture(count: 2)
        let cache = ImportCache(broker: fixture.importer, bounds: AttachCacheBounds(entries: 100, bytes: 1 << 40),
                                pressure: MemoryPressureWatch(watchingTheKernel: false))
        func listed() throws -> AttachCacheCounters? {
            try fixture.exporter.clients().first { $0.name == "cache test importer" }?.attachCache
        }
        #expect(try listed() == nil, "counters listed before any report")
        // The first boundary reports at once (nothing done yet); later ones wait out the interval.
        try useOnePerOperation(cache, fixture.ids + fixture.ids)
        cache.operationBoundary()
        #expect(try listed() == AttachCacheCounters(hits: 0, misses: 0, capacityEvictions: 0, pressureEvictions: 0,
                                                    entries: 0, bytes: 0))
        // The last report comes with removeAll, after it detached everything.
        cache.removeAll()
        #expect(try listed() == AttachCacheCounters(hits: 2, misses: 2, capacityEvictions: 0, pressureEvictions: 0,
                                                    entries: 0, bytes: 0))
    }
}
