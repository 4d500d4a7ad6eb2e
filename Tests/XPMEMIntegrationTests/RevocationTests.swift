@preconcurrency import Glibc
import Synchronization
import Testing
import XPMEM
import XPMEMSystem

@Suite("Revocation", .serialized)
struct RevocationTests {
    @Test("an importer that misses a deadline is cut off the live pages; the others follow the segment to its fresh file",
          arguments: [true, false])
    func missedDeadlineRevokesForReal(windowCoversSegment: Bool) throws {
        let broker = try TestBroker()
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let segment = try broker.connect(name: "exporter").makeSegment(size: 16 * pageSize)
        segment.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0x11) }
        let reasons = Mutex<[InvalidationReason]>([])
        // Windows the two prompt importers saw end: their mappings are on the new file from then on.
        let ended = Mutex(0)
        let handlers = InvalidationHandlers(willInvalidate: { notice in reasons.withLock { $0.append(notice.reason) } },
                                            didInvalidate: { _ in ended.withLock { $0 += 1 } })
        let good = try broker.connect(name: "prompt importer").get(segment.id).attach(handlers: handlers)
        let reader = try broker.connect(name: "prompt reader").get(segment.id, access: .readOnly)
            .attach(handlers: InvalidationHandlers(didInvalidate: { _ in ended.withLock { $0 += 1 } }))
        let late = try ChildProcess("xpmem-probe", ["late-importer", "--socket", broker.socketPath, "\(segment.id)"])
        #expect(late.readLine() == "mapped first-byte 17")

        // Generous for the prompt importer on a busy machine; the late one never answers.
        let report = try segment.invalidate(length: windowCoversSegment ? nil : pageSize, deadline: .seconds(3))
        #expect(report.importers.map(\.outcome).sorted { $0.rawValue < $1.rawValue }
                    == [.acknowledged, .acknowledged, .missedDeadline])
        // Without a window over the whole segment, the move took one of its own.
        #expect(reasons.withLock { $0 } == (windowCoversSegment ? [.reuse] : [.reuse, .revoke]))
        // Touching before the importers' event threads ended the windows would sleep (`.block`), or
        // fault where the kernel cannot make touches sleep (`.revoke`): wait for the ends.
        let windows = windowCoversSegment ? 2 : 4
        let deadline = ContinuousClock.now + .seconds(20)
        while ended.withLock({ $0 }) < windows && ContinuousClock.now < deadline { usleep(5000) }
        #expect(ended.withLock { $0 } == windows)

        segment.withUnsafeMutableBytes { $0[0] = 0x22 }
        #expect(good.withUnsafeMutableBytes { $0[0] } == 0x22, "the prompt importer does not see the exporter's write")
        #expect(late.send("read") && late.readLine() == "first-byte 17", "the revoked descriptor sees the exporter's write")
        good.withUnsafeMutableBytes { $0[1] = 0x33 }
        #expect(segment.withUnsafeMutableBytes { $0[1] } == 0x33, "the exporter does not see the prompt importer's write")
        #expect(reader.withUnsafeMutableBytes { ($0[0], $0[1]) } == (0x22, 0x33), "the read-only importer was left on the old file")
        #expect(late.send("write 68") && late.readLine() == "wrote")
        #expect(segment.withUnsafeMutableBytes { $0[0] } == 0x22, "the revoked importer's write reached the exporter")
        #expect(good.withUnsafeMutableBytes { $0[0] } == 0x22, "the revoked importer's write reached another importer")
        // Later importers get the fresh file.
        let later = try broker.connect(name: "later importer").get(segment.id).attach()
        #expect(later.withUnsafeMutableBytes { ($0[0], $0[1], $0[2]) } == (0x22, 0x33, 0x11))
        late.signal(SIGKILL)
        late.waitForExit()
    }
}
