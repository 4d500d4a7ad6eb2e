@preconcurrency import Glibc
import Foundation
import Testing
import XPMEM
import XPMEMSystem

/// Shared-memory transparent huge pages: asked for at `makeSegment`, mapped huge by the exporter and
/// by an importer process, reported in `xpmemctl segments`, and refused with a clear error where the
/// machine does not allow them. The machine's `shmem_enabled` is set for the test and put back.
@Suite("Huge pages", .serialized)
struct HugePageTests {
    static let policyPath = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
    static let segmentSize = 8 << 20

    /// Whether this process may set the policy (root, and a kernel with shmem THP).
    static var canSetPolicy: Bool { TransparentHugePages.shmemPolicy != nil && access(policyPath, W_OK) == 0 }

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
}
