@preconcurrency import Glibc
import Foundation
import Synchronization
import Testing
@testable import XPMEM
import XPMEMSystem

/// Free-page hints with a real broker and a real importer process: the broker drops only pages hinted
/// free and not written since, and whatever is written after a hint survives, even a write racing the
/// hint and the drop.
@Suite("Free-page hints", .serialized)
struct FreePageHintTests {
    let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    /// Pages per write granule: a write ends the hint of its whole granule (`FreePageTracker`).
    var granulePages: Int { 256 * 1024 / pageSize }

    /// A segment of four granules, page N filled with byte N % 251 + 1 (never 0).
    private func filledSegment(_ broker: TestBroker, permit: UInt32 = 0o644) throws -> ExportedSegment {
        let segment = try broker.connect(name: "exporter").makeSegment(size: 4 * granulePages * pageSize,
                                                                       permit: Permit(rawValue: permit))
        segment.withUnsafeMutableBytes { bytes in
            for page in 0..<(bytes.count / pageSize) {
                bytes[page * pageSize..<(page + 1) * pageSize].initializeMemory(as: UInt8.self,
                                                                               repeating: UInt8(page % 251 + 1))
            }
        }
        return segment
    }

    private func firstByte(of page: Int, in segment: ExportedSegment) -> UInt8 {
        segment.withUnsafeMutableBytes { $0[page * pageSize] }
    }

    @Test("a clean hinted page is dropped and reads as zeros here and in an importer; written ones keep their bytes")
    func dropsOnlyCleanHintedPages() throws {
        let broker = try TestBroker()
        let segment = try filledSegment(broker)
        let reader = try ChildProcess("xpmem-probe", ["page-reader", "--socket", broker.socketPath, "\(segment.id)"])
        #expect(reader.readLine() == "attached \(segment.size)")
        let granule = granulePages
        #expect(try segment.hintFree(offset: 0, length: 3 * granule * pageSize) == 3 * granule)

        // Granule 1: this process writes one page after the hint. Granule 2: the kernel writes one
        // page for this process (read(2) from a pipe into it).
        segment.withUnsafeMutableBytes { $0[(granule + 1) * pageSize] = 0x99 }
        var pipeEnds: [CInt] = [0, 0]
        #expect(pipe(&pipeEnds) == 0)
        defer { close(pipeEnds[0]); close(pipeEnds[1]) }
        #expect(write(pipeEnds[1], "kernel", 6) == 6)
        let kernelWritten = segment.withUnsafeMutableBytes { bytes in
            read(pipeEnds[0], bytes.baseAddress! + (2 * granule + 3) * pageSize, 6)
        }
        #expect(kernelWritten == 6, "read(2) into a hinted page failed: \(String(cString: strerror(errno)))")

        #expect(try segment.dropFreePages() == granule, "only granule 0 was hinted and never written")
        for page in [0, 1, granule - 1] {
            #expect(firstByte(of: page, in: segment) == 0, "clean hinted page \(page) kept its bytes")
            #expect(reader.send("page \(page)") && reader.readLine() == "page \(page) first-byte 0")
        }
        #expect(firstByte(of: granule + 1, in: segment) == 0x99)
        #expect(reader.send("page \(granule + 1)") && reader.readLine() == "page \(granule + 1) first-byte 153")
        for page in [granule, 2 * granule - 1, 2 * granule, 4 * granule - 1] {
            #expect(firstByte(of: page, in: segment) == UInt8(page % 251 + 1), "page \(page) lost its bytes")
        }
        #expect(firstByte(of: 2 * granule + 3, in: segment) == UInt8(ascii: "k"))
        // Nothing hinted is left: a second drop drops nothing.
        #expect(try segment.dropFreePages() == 0)
        // A page dropped takes writes again (the protection's marker went with the hint).
        segment.withUnsafeMutableBytes { $0[0] = 0x42 }
        #expect(reader.send("page 0") && reader.readLine() == "page 0 first-byte 66")
        #expect(reader.send("quit"))
        #expect(reader.waitForExit() == 0)
    }

    @Test("closing the connection ends the hints first: the broker forgets them while it still hears the owner, whose later writes need no report")
    func closeForgetsHintsFirst() throws {
        let broker = try TestBroker()
        let owner = try broker.connect(name: "exporter")
        let segment = try owner.makeSegment(size: 4 * granulePages * pageSize, permit: Permit(rawValue: 0o644))
        segment.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 7) }
        #expect(try segment.hintFree(offset: 0, length: 2 * granulePages * pageSize) == 2 * granulePages)
        #expect(segment.hasFreePageHints)
        owner.close()
        #expect(!segment.hasFreePageHints, "the hints outlived the connection")
        #expect { try segment.hintFree(offset: 0, length: pageSize) } throws: { ($0 as? XPMEMError)?.code == .alreadyClosed }
        #expect(!segment.hasFreePageHints, "a hint after the close started watching writes again")
        // The page is not watched any more: the write lands at once, with no broker to tell.
        segment.withUnsafeMutableBytes { $0[0] = 0x55 }
        #expect(firstByte(of: 0, in: segment) == 0x55)
        #expect(firstByte(of: 1, in: segment) == 7)
    }

    @Test("a write racing hints and drops is never lost once the hint has returned")
    func racingWritesSurvive() throws {
        let broker = try TestBroker()
        let segment = try filledSegment(broker)
        let pages = segment.size / pageSize
        let racing = RacingWriter(base: UInt(bitPattern: segment.bytes.baseAddress!), pages: pages, pageSize: pageSize)
        let writer = Thread { racing.run() }
        writer.start()
        var dropped = 0
        var rounds = 0
        // Rounds go on until the writer has made 20 passes meanwhile (however the two threads are
        // scheduled), and at least 30 rounds.
        let deadline = Date().addingTimeInterval(60)
        while (rounds < 30 || racing.writes < 20 * pages) && Date() < deadline {
            try segment.hintFree(offset: 0, length: segment.size)
            racing.hintReturned()
            dropped += try segment.dropFreePages()
            rounds += 1
        }
        racing.stop()
        #expect(racing.waitUntilStopped(), "the writer did not stop")
        // The writer checked every page before each write: it held its last value, or zeros if that
        // write began before a hint returned (the hint may cover it); never an older value, never
        // zeros after a later write. The final state is checked the same way.
        var lost = racing.violations
        for page in 0..<pages where !racing.holdsItsLastWrite(page, word: segment.bytes.baseAddress!
            .load(fromByteOffset: page * pageSize, as: UInt64.self)) {
            lost.append(page)
        }
        #expect(lost.isEmpty, "writes lost (page numbers): \(lost.prefix(10))")
        #expect(racing.writes >= 20 * pages, "the writer made only \(racing.writes) writes in 60 s: the race did not happen")
        // Not asserted (it depends on timing), but said: how many pages the drops found clean.
        print("racing writes: \(racing.writes) writes, \(dropped) pages dropped over \(rounds) rounds")
    }

    @Test("a segment anyone attached read-write keeps no hints: nothing is dropped")
    func writableImporterEndsHints() throws {
        let broker = try TestBroker()
        let segment = try filledSegment(broker, permit: 0o600)
        #expect(try segment.hintFree(offset: 0, length: granulePages * pageSize) == granulePages)
        let writer = try ChildProcess("xpmem-probe", ["page-reader", "--writable", "--socket", broker.socketPath,
                                                      "\(segment.id)"])
        #expect(writer.readLine() == "attached \(segment.size)")
        #expect(try segment.hintFree(offset: 0, length: segment.size) == 0)
        #expect(try segment.dropFreePages() == 0)
        #expect(firstByte(of: 0, in: segment) == 1, "a page an importer could write was dropped")
        #expect(writer.send("quit"))
        #expect(writer.waitForExit() == 0)
    }

    @Test("SIGUSR1 to the broker drops what memory pressure would")
    func brokerDropsOnSignal() throws {
        let broker = try TestBroker()
        let segment = try filledSegment(broker)
        #expect(try segment.hintFree(offset: granulePages * pageSize, length: granulePages * pageSize) == granulePages)
        #expect(kill(broker.pid, SIGUSR1) == 0)
        let deadline = Date().addingTimeInterval(10)
        while firstByte(of: granulePages, in: segment) != 0 && Date() < deadline { usleep(1000) }
        #expect(firstByte(of: granulePages, in: segment) == 0, "the broker did not drop the hinted pages")
        #expect(firstByte(of: 2 * granulePages - 1, in: segment) == 0)
        #expect(firstByte(of: granulePages - 1, in: segment) == UInt8((granulePages - 1) % 251 + 1))
        #expect(try segment.dropFreePages() == 0, "pages dropped under pressure were still counted as hinted")
    }

    @Test("hints are refused where they cannot be kept")
    func refusals() throws {
        let broker = try TestBroker()
        let segment = try filledSegment(broker)
        for (offset, length) in [(1, pageSize), (0, 0), (0, segment.size + pageSize), (-pageSize, pageSize)] {
            #expect(throws: XPMEMError.self) { try segment.hintFree(offset: offset, length: length) }
        }
        try segment.remove()
        do {
            try segment.hintFree(offset: 0, length: pageSize)
            Issue.record("a removed segment took a hint")
        } catch {
            #expect(error.code == .alreadyClosed)
        }
    }
}

/// Writes an increasing counter into the first word of every page in turn. Before each write it
/// checks the page still holds its last write (or zeros, if that write began before a hint returned),
/// and counts the pages where it does not.
private final class RacingWriter: Sendable {
    private let base: UInt
    private let pages: Int
    private let pageSize: Int
    private let state = Mutex(State())
    private struct State {
        var stopRequested = false
        var stopped = false
        var last: [Int: (value: UInt64, began: UInt64)] = [:]
        var writes = 0
        var violations: [Int] = []
        /// When the latest hint returned (monotonic nanoseconds).
        var hintReturned: UInt64 = 0
    }

    init(base: UInt, pages: Int, pageSize: Int) {
        self.base = base
        self.pages = pages
        self.pageSize = pageSize
    }

    func run() {
        var counter: UInt64 = 0
        while !state.withLock({ $0.stopRequested }) {
            for page in 0..<pages {
                let address = UnsafeMutableRawPointer(bitPattern: base + UInt(page * pageSize))!
                let word = SharedMemoryAccess.load(address)
                if !holdsItsLastWrite(page, word: word) { state.withLock { $0.violations.append(page) } }
                counter += 1
                let began = SharedMemoryAccess.monotonicNanoseconds()
                address.storeBytes(of: counter, as: UInt64.self)
                state.withLock { state in
                    state.last[page] = (counter, began)
                    state.writes += 1
                }
            }
        }
        state.withLock { $0.stopped = true }
    }

    /// Whether `word` is what page `page` may hold now: its last write, or zeros when that write began
    /// before a hint returned (a page never written yet holds anything).
    func holdsItsLastWrite(_ page: Int, word: UInt64) -> Bool {
        state.withLock { state in
            guard let last = state.last[page] else { return true }
            return word == last.value || (word == 0 && last.began < state.hintReturned)
        }
    }

    func hintReturned() {
        let now = SharedMemoryAccess.monotonicNanoseconds()
        state.withLock { $0.hintReturned = now }
    }

    func stop() { state.withLock { $0.stopRequested = true } }

    func waitUntilStopped() -> Bool {
        let deadline = Date().addingTimeInterval(30)
        while !state.withLock({ $0.stopped }) {
            if Date() > deadline { return false }
            usleep(1000)
        }
        return true
    }

    var writes: Int { state.withLock { $0.writes } }
    var violations: [Int] { state.withLock { $0.violations } }
}
