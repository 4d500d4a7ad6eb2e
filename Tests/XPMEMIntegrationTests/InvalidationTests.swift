@preconcurrency import Glibc
import Foundation
import Synchronization
import Testing
import XPMEM
import XPMEMSystem

/// What `xpmem-probe watch` reports about the reads its watcher thread made.
/// Waits until a `watch` importer's reader thread has completed reads, so that it is surely reading
/// when a window opens: on a busy machine a new thread may take a while to run at all, and a reader
/// whose first read falls inside the window shows no pause that starts before it.
func waitUntilReading(_ importer: ChildProcess, timeout: Double = 20) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        importer.send("summary")
        while let line = importer.readLine(timeout: 5) {
            guard line.hasPrefix("reads") else { continue }
            if let summary = WatchSummary(line), summary.reads > 0 { return true }
            break
        }
        usleep(20_000)
    }
    return false
}

struct WatchSummary {
    var reads: Int
    var tornReads: Int
    var lastValue: UInt64
    /// Gaps longer than 20 ms between two completed reads, with the value the later read saw.
    var pauses: [(from: UInt64, to: UInt64, valueAfter: UInt64)]

    init?(_ line: String?) {
        guard let fields = line?.split(separator: " ").map(String.init), fields.count == 8, fields[0] == "reads",
              let reads = Int(fields[1]), let torn = Int(fields[3]), let value = UInt64(fields[5])
        else { return nil }
        self.reads = reads
        tornReads = torn
        lastValue = value
        pauses = fields[7] == "none" ? [] : fields[7].split(separator: ",").compactMap { pause in
            let parts = pause.split(separator: ":")
            let span = parts[0].split(separator: "-")
            guard parts.count == 2, span.count == 2, let from = UInt64(span[0]), let to = UInt64(span[1]),
                  let after = UInt64(parts[1]) else { return nil }
            return (from, to, after)
        }
    }
}

/// Whether the reader was held for the window: it completed no read in the window's last 100 ms (an
/// unheld reader completes thousands per millisecond), and its next read came after the window. The
/// pause may begin a little after the window opened: a read whose loads ran before the window is
/// timestamped only when the reader runs again, and a busy machine may preempt it in between.
func coversWindow(_ pause: (from: UInt64, to: UInt64, valueAfter: UInt64), _ window: (start: UInt64, end: UInt64)) -> Bool {
    pause.from + 100_000_000 <= window.end && pause.to >= window.end
}

/// Fills the first 64 bytes (the record the watcher reads) with one value.
func writeRecord(_ value: UInt64, words: Range<Int> = 0..<8, in segment: ExportedSegment) {
    for word in words { SharedMemoryAccess.store(value, to: segment.bytes.baseAddress! + word * 8) }
}

@Suite("Invalidation", .serialized)
struct InvalidationTests {
    @Test("With .block, an importer reading during the window sleeps and then sees the new data, never a torn record")
    func blockPolicyPausesReaders() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        writeRecord(1, in: segment)
        let importer = try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath, "\(segment.id)"])
        #expect(importer.readLine() == "attached block")
        #expect(waitUntilReading(importer), "the importer's reader never started")
        var window: (start: UInt64, end: UInt64) = (0, 0)
        let report = try segment.invalidate(deadline: .seconds(10)) {
            window.start = SharedMemoryAccess.monotonicNanoseconds()
            // Half the record now, half later: a reader that could see the range would catch it torn.
            writeRecord(2, words: 0..<4, in: segment)
            usleep(150_000)
            writeRecord(2, words: 4..<8, in: segment)
            window.end = SharedMemoryAccess.monotonicNanoseconds()
        }
        #expect(report.importers.map(\.outcome) == [.acknowledged])
        usleep(100_000)
        importer.send("summary")
        let lines = [importer.readLine(), importer.readLine(), importer.readLine()]
        #expect(lines.contains { $0?.hasPrefix("begin 1 0 65536") == true })
        #expect(lines.contains("end 1"))
        let summary = try #require(WatchSummary(lines.first { $0?.hasPrefix("reads") == true } ?? nil))
        #expect(summary.tornReads == 0)
        #expect(summary.lastValue == 2)
        let covering = summary.pauses.first { coversWindow($0, window) }
        #expect(covering != nil, "no read may complete inside the window; pauses: \(summary.pauses)")
        #expect(covering?.valueAfter == 2)
    }

    @Test("With .block, touching a page the segment never had sleeps through the window too, instead of allocating it")
    func blockPolicyPausesTouchesOfHoles() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)  // never written: holes
        let attachment = try broker.connect(name: "importer").get(segment.id).attach()
        #expect(attachment.policy == .block)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let hole = UInt(bitPattern: attachment.bytes.baseAddress! + 3 * page)
        let readAt = Atomic<UInt64>(0)
        let readValue = Atomic<UInt64>(.max)
        let done = DispatchSemaphore(value: 0)
        var windowEnd: UInt64 = 0
        let report = try segment.invalidate(deadline: .seconds(10)) {
            Thread.detachNewThread {
                let value = SharedMemoryAccess.load(UnsafeRawPointer(bitPattern: hole)!)
                readAt.store(SharedMemoryAccess.monotonicNanoseconds(), ordering: .sequentiallyConsistent)
                readValue.store(value, ordering: .sequentiallyConsistent)
                done.signal()
            }
            usleep(200_000)
            segment.bytes[3 * page] = 9  // the change: the page exists from now on
            windowEnd = SharedMemoryAccess.monotonicNanoseconds()
        }
        #expect(report.importers.map(\.outcome) == [.acknowledged])
        #expect(done.wait(timeout: .now() + 20) == .success, "the reader never woke")
        #expect(readAt.load(ordering: .sequentiallyConsistent) >= windowEnd, "a touch of a hole completed inside the window")
        #expect(readValue.load(ordering: .sequentiallyConsistent) == 9, "the reader did not see the change")
    }

    @Test("An unprivileged importer gets .block too (user-mode-only userfaultfd) and is paused by it",
          .enabled(if: OtherUser.available, "needs root to run a probe as another uid"))
    func blockPolicyWorksUnprivileged() throws {
        let broker = try TestBroker(mode: "0666", openDirectory: true)
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10, permit: Permit(rawValue: 0o666))
        writeRecord(1, in: segment)
        let importer = try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath, "\(segment.id)",
                                                        "--as-uid", "\(OtherUser.uid)", "--as-gid", "\(OtherUser.gid)"])
        #expect(importer.readLine() == "attached block")
        #expect(waitUntilReading(importer), "the importer's reader never started")
        var window: (start: UInt64, end: UInt64) = (0, 0)
        _ = try segment.invalidate(deadline: .seconds(10)) {
            window.start = SharedMemoryAccess.monotonicNanoseconds()
            writeRecord(3, in: segment)
            usleep(150_000)
            window.end = SharedMemoryAccess.monotonicNanoseconds()
        }
        usleep(50_000)
        importer.send("summary")
        let summary = try #require(WatchSummary((0..<3).lazy.compactMap { _ in importer.readLine() }.first { $0.hasPrefix("reads") }))
        #expect(summary.lastValue == 3)
        #expect(summary.pauses.contains { coversWindow($0, window) }, "pauses: \(summary.pauses)")
    }

    @Test("A callback that sleeps 10 s delays the exporter by at least that, while other segments are served")
    func sleepingCallbackDelaysOnlyItsSegment() throws {
        let broker = try TestBroker()
        let exporter = try broker.connect(name: "exporter")
        let slow = try exporter.makeSegment(size: 64 << 10)
        let other = try exporter.makeSegment(size: 64 << 10)
        other.bytes.initializeMemory(as: UInt8.self, repeating: 5)
        // The window is long enough for a third process to start, attach and verify inside it even on a
        // busy machine: the test asserts an order of events, not a short duration.
        let importer = try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath, "\(slow.id)",
                                                        "--callback-sleep", "10000", "--idle"])
        #expect(importer.readLine(timeout: 20) == "attached block")

        let clock = ContinuousClock()
        let invalidationEnded = Mutex<ContinuousClock.Instant?>(nil)
        let outcomes = Mutex<[ImporterOutcome]>([])
        let start = clock.now
        let thread = try DetachedJoin {
            let report = try slow.invalidate(deadline: .seconds(30))
            outcomes.withLock { $0 = report.importers.map(\.outcome) }
            invalidationEnded.withLock { $0 = clock.now }
        }
        // The callback has begun: the slow segment is inside its window from here on.
        #expect(importer.readLine(timeout: 20) == "begin 1 0 65536 reuse")
        let third = try ChildProcess("share", ["import", "--socket", broker.socketPath, "\(other.id)", "--verify", "5"])
        #expect(third.waitForExit() == 0)
        let thirdDone = clock.now
        try #require(thread.join(within: .seconds(60)), "the invalidation did not return within 60 s")
        #expect(thread.error == nil, "the invalidation failed: \(String(describing: thread.error))")
        #expect(outcomes.withLock { $0 } == [.acknowledged])
        let ended = try #require(invalidationEnded.withLock { $0 })
        #expect(ended - start >= .seconds(10))
        #expect(thirdDone < ended, "the other segment's importer must not wait for the invalidation")
    }

    @Test("With .revoke, touching the range during the window kills the importer with SIGSEGV or SIGBUS")
    func revokePolicyFaults() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        // Without Swift's crash backtracer: it can take longer than the window, and a fault it handles
        // after `end` has mapped the range back looks like a survived touch.
        let importer = try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath, "\(segment.id)",
                                                        "--policy", "revoke"], environment: ["SWIFT_BACKTRACE": "enable=no"])
        #expect(importer.readLine() == "attached revoke")
        _ = try segment.invalidate(deadline: .seconds(10)) { usleep(200_000) }
        importer.waitForExit(timeout: 10)
        #expect([SIGSEGV, SIGBUS].contains(importer.terminationSignal ?? 0),
                "the importer should have died of a fault, not \(String(describing: importer.terminationSignal))")
    }

    @Test("An importer whose callback never returns is reported and revoked; the exporter returns on time")
    func missedDeadlineIsReportedAndRevoked() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        let stuck = try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath, "\(segment.id)",
                                                     "--callback-sleep=-1", "--idle"])
        let prompt = try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath, "\(segment.id)", "--idle"])
        #expect(stuck.readLine() == "attached block")
        #expect(prompt.readLine() == "attached block")
        let clock = ContinuousClock()
        let start = clock.now
        let report = try segment.invalidate(deadline: .milliseconds(300))
        let elapsed = clock.now - start
        #expect(elapsed >= .milliseconds(300) && elapsed < .seconds(3))
        let outcomes = Dictionary(uniqueKeysWithValues: report.importers.map { ($0.pid, $0.outcome) })
        #expect(outcomes[stuck.pid] == .missedDeadline)
        #expect(outcomes[prompt.pid] == .acknowledged)
        #expect(report.anyMissedDeadline)
        let status = try broker.waitForStatus { $0.grants == 1 && $0.attachments == 1 }
        #expect(status.grants == 1, "the stuck importer's grant is revoked, the prompt one's kept")
    }

    @Test("An importer killed mid-invalidation counts as acknowledged at once")
    func importerKilledMidInvalidation() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        let importer = try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath, "\(segment.id)",
                                                        "--callback-sleep=-1", "--idle"])
        #expect(importer.readLine() == "attached block")
        let killer = try DetachedJoin {
            _ = importer.readLine()  // "begin ..."
            importer.signal(SIGKILL)
        }
        let clock = ContinuousClock()
        let start = clock.now
        let report = try segment.invalidate(deadline: .seconds(20))
        #expect(killer.join(within: .seconds(20)), "the killer thread did not finish")
        #expect(clock.now - start < .seconds(5))
        #expect(report.importers.map(\.outcome) == [.exited])
        #expect(try broker.waitForStatus { $0.grants == 0 }.grants == 0)
    }

    @Test("An exporter killed mid-invalidation: importers are told the segment is released and it is gone")
    func exporterKilledMidInvalidation() throws {
        let broker = try TestBroker()
        let exporter = try ChildProcess("xpmem-probe", ["export-and-invalidate", "--socket", broker.socketPath])
        let id = try #require(exporter.readLine(timeout: 20))
        let segment = try #require(SegmentID(id), "not a segment id: \(id)")
        let importer = try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath, id, "--idle"])
        #expect(importer.readLine(timeout: 20) == "attached block")
        exporter.send("go")
        #expect(exporter.readLine(timeout: 20) == "invalidating")
        // The importer acknowledges at once; the window stays open (the exporter's change never returns).
        #expect(importer.readLine(timeout: 20) == "begin 1 0 1048576 reuse")
        exporter.signal(SIGKILL)
        exporter.waitForExit(timeout: 20)
        #expect(exporter.terminationSignal == SIGKILL)
        // The broker removes the dead exporter's segment and tells the importer why: the window ends with
        // the release, never with an `end`.
        #expect(importer.readLine(timeout: 20) == "release exporter exited")
        // The importer outlives the release and still answers.
        importer.send("summary")
        #expect(importer.readLine(timeout: 20)?.hasPrefix("reads 0 ") == true)
        let status = try broker.waitForStatus(timeout: 20) { $0.segments == 0 }
        #expect(status.segments == 0)
        // The segment is unknown now: a late get is refused as not found (not, say, for permission or by
        // a broker that fails for another reason).
        let late = try broker.connect(name: "late importer")
        let refusal = #expect(throws: XPMEMError.self) { try late.get(segment) }
        #expect(refusal?.code == .notFound, "the late get failed for another reason: \(String(describing: refusal))")
    }

    @Test("Only importers whose attachments overlap the range are told")
    func onlyOverlappingImportersAreMessaged() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 128 << 10)
        let low = try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath, "\(segment.id)",
                                                   "--length", "\(64 << 10)", "--idle"])
        let high = try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath, "\(segment.id)",
                                                    "--offset", "\(64 << 10)", "--idle"])
        #expect(low.readLine() == "attached block")
        #expect(high.readLine() == "attached block")
        let report = try segment.invalidate(offset: 64 << 10, length: 4096, deadline: .seconds(10))
        #expect(report.importers.map(\.pid) == [high.pid])
        #expect(high.readLine() == "begin 1 0 4096 reuse")
        #expect(high.readLine() == "end 1")
        // The low importer heard nothing: the next thing it reports is the summary we ask for.
        low.send("summary")
        #expect(low.readLine()?.hasPrefix("reads") == true)
    }

    @Test("Remove: importers run their release callback and touching the mapping then faults")
    func removeReleasesAndTouchingFaults() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        let importer = try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath, "\(segment.id)",
                                                        "--idle", "--touch-after-release"])
        #expect(importer.readLine() == "attached block")
        try segment.remove(deadline: .seconds(10))
        let lines = importer.remainingLines(timeout: 10)
        #expect(lines.contains { $0.hasPrefix("begin 1 0 65536 remove") })
        #expect(lines.contains("release removed"))
        #expect(lines.contains("touching"))
        #expect(!lines.contains("touch survived"))
        importer.waitForExit()
        #expect([SIGSEGV, SIGBUS].contains(importer.terminationSignal ?? 0))
    }

    @Test("An attach overlapping a range being invalidated waits for the end; other attaches do not")
    func attachWaitsForTheEnd() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 128 << 10)
        segment.bytes.initializeMemory(as: UInt8.self, repeating: 3)
        let holder = try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath, "\(segment.id)", "--idle"])
        #expect(holder.readLine() == "attached block")
        let report = try segment.beginInvalidation(offset: 0, length: 64 << 10, deadline: .seconds(10))
        let overlapping = try ChildProcess("share", ["import", "--socket", broker.socketPath, "\(segment.id)",
                                                     "--verify", "4", "--length", "64K"])
        let disjoint = try ChildProcess("share", ["import", "--socket", broker.socketPath, "\(segment.id)",
                                                  "--verify", "3", "--offset", "64K"])
        #expect(disjoint.waitForExit() == 0, "a range outside the invalidation is served at once")
        #expect(overlapping.readLine(timeout: 0.5) == nil, "the overlapping attach must wait for the end")
        segment.bytes.initializeMemory(as: UInt8.self, repeating: 4)
        try segment.endInvalidation(report)
        #expect(overlapping.waitForExit() == 0, "after the end it attaches and sees the new bytes")
    }

    @Test("64 importers of one segment all acknowledge")
    func sixtyFourImporters() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        var importers: [ChildProcess] = []
        for _ in 0..<64 {
            importers.append(try ChildProcess("xpmem-probe", ["watch", "--socket", broker.socketPath,
                                                              "\(segment.id)", "--idle"]))
        }
        for importer in importers { #expect(importer.readLine(timeout: 60) == "attached block") }
        let report = try segment.invalidate(deadline: .seconds(30))
        #expect(report.importers.count == 64)
        #expect(report.importers.allSatisfy { $0.outcome == .acknowledged })
        #expect(Set(report.importers.map(\.pid)) == Set(importers.map(\.pid)))
    }
}

/// A thread for a test to run something beside its own and wait for, for a bounded time: what the
/// body throws is kept for the test to check, not swallowed.
final class DetachedJoin: Sendable {
    private let outcome = Mutex<(finished: Bool, error: (any Error)?)>((false, nil))

    init(_ body: @escaping @Sendable () throws -> Void) throws {
        try DetachedThread.start { [self] in
            var failure: (any Error)?
            do { try body() } catch { failure = error }
            outcome.withLock { $0 = (true, failure) }
        }
    }

    /// Waits until the body has finished or `limit` has passed; whether it finished.
    func join(within limit: Duration) -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        while !outcome.withLock({ $0.finished }) {
            guard clock.now < deadline else { return false }
            usleep(1000)
        }
        return true
    }

    /// What the body threw, if it has finished by throwing.
    var error: (any Error)? { outcome.withLock { $0.error } }
}
