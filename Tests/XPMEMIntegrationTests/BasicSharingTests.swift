@preconcurrency import Glibc
import Testing
import XPMEM

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
}
