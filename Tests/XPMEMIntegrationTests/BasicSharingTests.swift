@preconcurrency import Glibc
import Testing
import XPMEM
import XPMEMSystem

/// The first end-to-end check: an exporter process and an importer process share the same pages.
@Suite("Sharing between processes", .serialized)
struct BasicSharingTests {
    @Test("An importer process sees the exporter's bytes and the exporter sees the importer's writes")
    func importerAndExporterSeeEachOther() throws {
        let broker = try TestBroker()
        let exporter = try broker.connect(name: "exporter")
        let segment = try exporter.makeSegment(size: 1 << 20)
        segment.bytes.initializeMemory(as: UInt8.self, repeating: 7)

        let importer = try ChildProcess("share", ["import", "--socket", broker.socketPath, "\(segment.id)",
                                                  "--verify", "7", "--write", "9"])
        #expect(importer.waitForExit() == 0, "importer output: \(importer.remainingLines())")
        #expect(segment.bytes.allSatisfy { $0 == 9 })
    }

    /// Sizes below and at the streaming threshold (half the last-level cache), from offsets that
    /// leave the source and the destination unaligned to cache lines.
    @Test("copyBytes copies an attachment's bytes, streaming or not, and refuses ranges outside it")
    func copyBytesCopiesAndChecksItsRange() throws {
        let broker = try TestBroker()
        let exporter = try broker.connect(name: "exporter")
        let streamed = max(StreamingCopy.lastLevelCacheBytes / 2, 1 << 20) + 4096
        let segment = try exporter.makeSegment(size: streamed + 8192)
        for index in 0..<segment.bytes.count { segment.bytes[index] = UInt8(truncatingIfNeeded: index &* 7 &+ index >> 13) }
        let attachment = try broker.connect(name: "importer").get(segment.id, access: .readOnly).attach()
        for (offset, count) in [(0, 100), (5, 64 << 10), (4099, streamed)] {
            let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: count + 3, alignment: 64)
            defer { destination.deallocate() }
            let target = UnsafeMutableRawBufferPointer(rebasing: destination[3...])
            try attachment.copyBytes(from: offset, into: target)
            #expect((0..<count).allSatisfy { target[$0] == segment.bytes[offset + $0] }, "\(count) bytes from \(offset)")
        }
        let one = UnsafeMutableRawBufferPointer.allocate(byteCount: 2, alignment: 1)
        defer { one.deallocate() }
        #expect(throws: XPMEMError.self) { try attachment.copyBytes(from: attachment.length - 1, into: one) }
        #expect(throws: XPMEMError.self) { try attachment.copyBytes(from: -1, into: one) }
        try attachment.detach()
        #expect(throws: XPMEMError.self) { try attachment.copyBytes(into: one) }
    }
}
