@preconcurrency import Glibc
import Foundation
import Synchronization
import Testing
import XPMEM
import XPMEMSystem

/// Shared-memory transparent huge pages and hugetlb pages: asked for at `makeSegment`, mapped huge by
/// the exporter and by an importer process, reported in `xpmemctl segments`, and refused with a clear
/// error where the machine does not offer them. The machine's `shmem_enabled` and hugetlb pool are set
/// for the test and put back.
@Suite("Huge pages", .serialized)
struct HugePageTests {
    static let policyPath = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
    static let segmentSize = 8 << 20

    /// Whether this process may set the policy (root, and a kernel with shmem THP).
    static var canSetPolicy: Bool { TransparentHugePages.shmemPolicy != nil && access(policyPath, W_OK) == 0 }

    static let poolPath = "/proc/sys/vm/nr_hugepages"
    /// Whether this process may size the hugetlb pool (root, and a kernel with hugetlb pages).
    static var canSizePool: Bool { HugeTLBPool.current() != nil && access(poolPath, W_OK) == 0 }

    /// Runs `body` with the hugetlb pool sized to `pages` (what the kernel could set aside, which the
    /// test checks), then restores it.
    private func withHugeTLBPool(_ pages: Int, _ body: (HugeTLBPool) throws -> Void) throws {
        let previous = try String(contentsOfFile: Self.poolPath, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try "\(pages)".write(toFile: Self.poolPath, atomically: false, encoding: .utf8)
        defer { try? previous.write(toFile: Self.poolPath, atomically: false, encoding: .utf8) }
        let pool = try #require(HugeTLBPool.current())
        try #require(pool.totalPages == pages, "the kernel set aside \(pool.totalPages) of \(pages) huge pages")
        try body(pool)
    }

    /// Runs `body` with `shmem_enabled` set to `policy`, then restores it.
    private func withShmemPolicy(_ policy: String, _ body: () throws -> Void) throws {
        let previous = try #require(TransparentHugePages.shmemPolicy)
        try policy.write(toFile: Self.policyPath, atomically: false, encoding: .utf8)
        defer { try? previous.rawValue.write(toFile: Self.policyPath, atomically: false, encoding: .utf8) }
        try #require(TransparentHugePages.shmemPolicy?.rawValue == policy)
        try body()
    }

    @Test("a segment asking for THP gets huge pages in the exporter and in an importer, and says so",
          .enabled(if: canSetPolicy, "setting shmem_enabled needs root and a kernel with shmem THP"))
    func transparentHugePagesOnBothSides() throws {
        try withShmemPolicy("advise") {
            let broker = try TestBroker()
            let exporter = try broker.connect(name: "exporter")
            let segment = try exporter.makeSegment(size: Self.segmentSize, permit: Permit(rawValue: 0o644),
                                                   hugePages: .transparent)
            let plain = try exporter.makeSegment(size: Self.segmentSize, permit: Permit(rawValue: 0o644))
            segment.bytes.initializeMemory(as: UInt8.self, repeating: 1)
            plain.bytes.initializeMemory(as: UInt8.self, repeating: 1)
            let backing = try segment.pageBacking()
            #expect(backing.hugePageBytes >= Self.segmentSize / 2,
                    "only \(backing.hugePageBytes) bytes mapped huge: \(backing)")
            let plainBacking = try plain.pageBacking()
            #expect(plainBacking.requested == .none && plainBacking.hugePageBytes == 0 && plainBacking.description == "4 KiB")
            let listed = try exporter.segments()
            #expect(listed.first { $0.id == segment.id.description }?.pages == backing.description)
            #expect(listed.first { $0.id == plain.id.description }?.pages == "4 KiB")

            // An importer that touches a THP segment first allocates its pages, huge too.
            let untouched = try exporter.makeSegment(size: Self.segmentSize, permit: Permit(rawValue: 0o644),
                                                     hugePages: .transparent)
            for (target, huge) in [(segment, true), (plain, false), (untouched, true)] {
                let reader = try ChildProcess("xpmem-probe", ["page-reader", "--socket", broker.socketPath, "\(target.id)"])
                #expect(reader.readLine() == "attached \(Self.segmentSize)")
                #expect(reader.send("huge-bytes"))
                let words = (reader.readLine() ?? "").split(separator: " ")
                let bytes = words.count == 4 ? Int(words[1]) ?? -1 : -1
                let expectedSum = target === untouched ? 0 : Self.segmentSize / 4096
                #expect(words.count == 4 && words[3] == "\(expectedSum)", "the importer read other bytes: \(words)")
                if huge {
                    #expect(bytes >= Self.segmentSize / 2, "the importer maps \(bytes) bytes huge")
                } else {
                    #expect(bytes == 0, "the importer of a 4 KiB segment maps \(bytes) bytes huge")
                }
                #expect(reader.send("quit"))
                #expect(reader.waitForExit() == 0)
            }
        }
    }

    @Test("asking for THP where shared memory may not have them is refused with what to change",
          .enabled(if: canSetPolicy, "setting shmem_enabled needs root and a kernel with shmem THP"))
    func refusedWhereTheMachineDoesNotAllowThem() throws {
        try withShmemPolicy("never") {
            let broker = try TestBroker()
            do {
                _ = try broker.connect(name: "exporter").makeSegment(size: Self.segmentSize, hugePages: .transparent)
                Issue.record("a THP segment was made with shmem_enabled = never")
            } catch let error as XPMEMError {
                #expect(error.code == .invalidArgument && error.message.contains("shmem_enabled"), "\(error)")
            }
        }
    }

    @Test("a hugetlb segment is huge in the exporter and in an importer, says so, and gives its pages back",
          .enabled(if: canSizePool, "sizing the hugetlb pool needs root and a kernel with hugetlb pages"))
    func hugeTLBPagesOnBothSides() throws {
        try withHugeTLBPool(16) { pool in
            let broker = try TestBroker()
            let exporter = try broker.connect(name: "exporter")
            // Not a whole number of huge pages: rounded up.
            let segment = try exporter.makeSegment(size: Self.segmentSize - 4096, permit: Permit(rawValue: 0o644),
                                                   hugePages: .hugeTLB)
            #expect(segment.size == Self.segmentSize)
            #expect(HugeTLBPool.current()?.availablePages == 16 - Self.segmentSize / pool.pageSize,
                    "making the segment reserved its pages")
            segment.bytes.initializeMemory(as: UInt8.self, repeating: 1)
            let backing = try segment.pageBacking()
            #expect(backing.requested == .hugeTLB && backing.hugePageBytes == Self.segmentSize, "\(backing)")
            #expect(backing.description == "hugetlb \(pool.pageSize >> 20) MiB, 8 of 8 MiB")
            #expect(try exporter.segments().first { $0.id == segment.id.description }?.pages == backing.description)

            let reader = try ChildProcess("xpmem-probe", ["page-reader", "--socket", broker.socketPath, "\(segment.id)"])
            #expect(reader.readLine() == "attached \(Self.segmentSize)")
            #expect(reader.send("huge-bytes"))
            #expect(reader.readLine() == "huge-bytes \(Self.segmentSize) sum \(Self.segmentSize / 4096)")

            // The importer's mapping stops and resumes at huge-page granularity: it sees the change.
            let report = try segment.invalidate(offset: pool.pageSize, length: pool.pageSize, deadline: .seconds(30)) {
                segment.bytes[pool.pageSize] = 7
            }
            #expect(report.importers.map(\.outcome) == [.acknowledged])
            #expect(reader.send("page \(pool.pageSize / 4096)"))
            #expect(reader.readLine() == "page \(pool.pageSize / 4096) first-byte 7")
            #expect(reader.send("quit"))
            #expect(reader.waitForExit() == 0)

            // Once removed and unmapped everywhere, the broker holds none of the pool.
            try segment.remove()
            exporter.close()
            #expect(HugeTLBPool.current()?.availablePages == 16)
        }
    }

    @Test("a hugetlb segment refuses what is not aligned to its pages, hints, and a move, saying why",
          .enabled(if: canSizePool, "sizing the hugetlb pool needs root and a kernel with hugetlb pages"))
    func hugeTLBRefusesWhatItCannotDo() throws {
        try withHugeTLBPool(8) { pool in
            let broker = try TestBroker()
            let exporter = try broker.connect(name: "exporter")
            let segment = try exporter.makeSegment(size: 2 * pool.pageSize, hugePages: .hugeTLB)
            let importer = try broker.connect(name: "importer")
            let grant = try importer.get(segment.id)
            for (offset, length) in [(4096, 4096), (0, 4096), (4096, pool.pageSize)] {
                do {
                    _ = try grant.attach(offset: offset, length: length)
                    Issue.record("attached \(offset)+\(length) of a hugetlb segment")
                } catch let error as XPMEMError {
                    #expect(error.code == .invalidArgument && error.message.contains("page size \(pool.pageSize)"), "\(error)")
                }
            }
            let attachment = try grant.attach(offset: pool.pageSize, length: pool.pageSize)
            attachment.bytes[0] = 9
            #expect(segment.bytes[pool.pageSize] == 9)
            do {
                try segment.invalidate(offset: 0, length: 4096)
                Issue.record("invalidated 4 KiB of a hugetlb segment")
            } catch let error as XPMEMError {
                #expect(error.code == .invalidArgument && error.message.contains("page size \(pool.pageSize)"), "\(error)")
            }
            #expect {
                try segment.hintFree(offset: 0, length: pool.pageSize)
            } throws: { ($0 as? XPMEMError)?.code == .invalidArgument && "\($0)".contains("hugetlb") }
            #expect {
                try segment.migrate(to: 0)
            } throws: { error in
                // Without NUMA support the refusal says that first.
                (error as? XPMEMError)?.code == .invalidArgument && (!NUMA.isAvailable || "\(error)".contains("hugetlb"))
            }
            // More than the pool holds: refused before anything is mapped, with what to change.
            do {
                _ = try exporter.makeSegment(size: 64 * pool.pageSize, hugePages: .hugeTLB)
                Issue.record("a segment larger than the pool was made")
            } catch let error as XPMEMError {
                #expect(error.code == .resourceExhausted && error.message.contains("nr_hugepages"), "\(error)")
            }
        }
        try withHugeTLBPool(0) { _ in
            do {
                _ = try TestBroker().connect(name: "exporter").makeSegment(size: Self.segmentSize, hugePages: .hugeTLB)
                Issue.record("a hugetlb segment was made with no pool")
            } catch let error as XPMEMError {
                #expect(error.code == .invalidArgument && error.message.contains("nr_hugepages"), "\(error)")
            }
        }
    }

    /// A segment of `pages` huge pages, with every page written or only the first, in a pool with one
    /// page to spare.
    static let tightPools: [(pages: Int, writtenPages: Int)] = [(2, 2), (4, 1)]

    @Test("a hugetlb segment whose pool has no room for a second copy still revokes an importer that misses a deadline",
          .enabled(if: canSizePool, "sizing the hugetlb pool needs root and a kernel with hugetlb pages"),
          arguments: tightPools)
    func hugeTLBRevocationWithATightPool(pages: Int, writtenPages: Int) throws {
        // A fresh file beside the old one (twice the segment) cannot fit.
        try withHugeTLBPool(pages + 1) { pool in
            let broker = try TestBroker()
            let segment = try broker.connect(name: "exporter").makeSegment(size: pages * pool.pageSize, hugePages: .hugeTLB)
            segment.withUnsafeMutableBytes {
                $0[0..<(writtenPages * pool.pageSize)].initializeMemory(as: UInt8.self, repeating: 0x11)
            }
            let ended = Mutex(0)
            let good = try broker.connect(name: "prompt importer").get(segment.id)
                .attach(handlers: InvalidationHandlers(didInvalidate: { _ in ended.withLock { $0 += 1 } }))
            let late = try ChildProcess("xpmem-probe", ["late-importer", "--socket", broker.socketPath, "\(segment.id)"])
            #expect(late.readLine() == "mapped first-byte 17")
            // The application made the last page inaccessible: the move must copy it anyway, and keep it so.
            let last = segment.bytes.baseAddress! + (pages - 1) * pool.pageSize
            #expect(mprotect(last, pool.pageSize, PROT_NONE) == 0)

            let report = try segment.invalidate(deadline: .seconds(3))
            #expect(report.importers.map(\.outcome).sorted { $0.rawValue < $1.rawValue } == [.acknowledged, .missedDeadline])
            let attributes = try MappingAttributes.read(start: UInt(bitPattern: last), length: pool.pageSize)
            #expect(attributes.pieces.map(\.protection) == [.none], "the inaccessible page is not inaccessible any more")
            #expect(mprotect(last, pool.pageSize, PROT_READ | PROT_WRITE) == 0)
            #expect(last.load(as: UInt8.self) == (writtenPages == pages ? 0x11 : 0), "the inaccessible page lost its bytes")
            let deadline = ContinuousClock.now + .seconds(20)
            while ended.withLock({ $0 }) < 1 && ContinuousClock.now < deadline { usleep(5000) }
            #expect(ended.withLock { $0 } == 1)

            segment.withUnsafeMutableBytes { $0[0] = 0x22 }
            #expect(good.withUnsafeMutableBytes { $0[0] } == 0x22, "the prompt importer does not see the exporter's write")
            // The old file gave its pages back to the pool: the revoked importer's mapping reads holes.
            #expect(late.send("read") && late.readLine() == "first-byte 0", "the revoked mapping still reaches the bytes")
            #expect(late.send("write 68") && late.readLine() == "wrote")
            #expect(segment.withUnsafeMutableBytes { ($0[0], $0[1]) } == (0x22, 0x11), "the revoked importer's write landed")
            let later = try broker.connect(name: "later importer").get(segment.id).attach()
            #expect(later.withUnsafeMutableBytes { ($0[0], $0[1], $0[pool.pageSize]) }
                    == (0x22, 0x11, writtenPages > 1 ? 0x11 : 0))
            #expect(later.withUnsafeMutableBytes { $0[pages * pool.pageSize - 1] } == (writtenPages == pages ? 0x11 : 0))
            late.signal(SIGKILL)
            late.waitForExit()
        }
    }
}
