@preconcurrency import Glibc
import Foundation
import Testing
@testable import XPMEM
import XPMEMSystem

/// What `xpmem-probe read-loop` reports about the passes its reader made over the whole attachment.
struct ReadLoopSummary {
    var passes: Int
    /// Words that held a mix of bytes, zero, or an older pattern than one already seen.
    var badWords: Int
    var pattern: UInt8
    /// When the last complete pass ended (CLOCK_MONOTONIC nanoseconds).
    var lastPassEnd: UInt64
    /// Gaps longer than 20 ms between two pages read.
    var pauses: [(from: UInt64, to: UInt64)]

    init?(_ line: String) {
        let fields = line.split(separator: " ").map(String.init)
        guard fields.count == 10, fields[0] == "passes", let passes = Int(fields[1]), let bad = Int(fields[3]),
              let pattern = UInt8(fields[5]), let lastPass = UInt64(fields[7])
        else { return nil }
        self.passes = passes
        badWords = bad
        self.pattern = pattern
        lastPassEnd = lastPass
        pauses = fields[9] == "none" ? [] : fields[9].split(separator: ",").compactMap { pause in
            let span = pause.split(separator: "-")
            guard span.count == 2, let from = UInt64(span[0]), let to = UInt64(span[1]) else { return nil }
            return (from, to)
        }
    }

    /// Whether the reader was stopped from early in `window` until after its end: a pause began at most
    /// `slack` nanoseconds after the window opened and lasted past its end. The slack is there because
    /// a pause begins when the last page read before it finished *and the reader then read the clock*:
    /// a reader preempted in between records a later start than its last access. That no read saw the
    /// range inside the window is checked by the data (`badWords`), not by the clock.
    func slept(through window: (start: UInt64, end: UInt64), slack: UInt64 = 50_000_000) -> Bool {
        pauses.contains { $0.from <= window.start + slack && $0.to >= window.end }
    }
}

/// A `read-loop` probe and the event lines it printed so far.
final class ReadLoopImporter {
    let process: ChildProcess
    private(set) var events: [String] = []

    init(broker: TestBroker, segment: SegmentID, extra: [String], environment: [String: String] = [:]) throws {
        process = try ChildProcess("xpmem-probe", ["read-loop", "--socket", broker.socketPath, "\(segment)"] + extra,
                                   environment: environment)
    }

    /// The policy line the probe prints once attached, e.g. "attached block".
    func attachedLine() -> String? { process.readLine(timeout: 20) }

    /// Asks for a summary; event lines that come first are kept in `events`. Nil when the probe is dead
    /// (checked first: writing to a dead child's pipe would kill the test runner with SIGPIPE).
    func summary(timeout: Double = 20) -> ReadLoopSummary? {
        usleep(20_000)  // Foundation notices a child's death asynchronously
        guard process.isRunning else { return nil }
        process.send("summary")
        return nextSummary(timeout: timeout)
    }

    /// Waits until the reader has completed a pass, so that it is surely reading when a window opens
    /// (on a busy machine a new thread may take a while to run at all).
    func waitUntilReading(timeout: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let summary = summary() else { return false }
            if summary.passes > 0 { return true }
        }
        return false
    }

    /// Reads lines until a summary (or `timeout`), keeping the event lines.
    private func nextSummary(timeout: Double) -> ReadLoopSummary? {
        let deadline = Date().addingTimeInterval(timeout)
        while let line = process.readLine(timeout: max(0, deadline.timeIntervalSinceNow)) {
            if let summary = ReadLoopSummary(line) { return summary }
            events.append(line)
        }
        return nil
    }

    /// Reads lines until one starts with `prefix` (or `timeout`), keeping them all in `events`.
    func waitForEvent(prefix: String, timeout: Double = 20) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while let line = process.readLine(timeout: max(0, deadline.timeIntervalSinceNow)) {
            events.append(line)
            if line.hasPrefix(prefix) { return line }
        }
        return nil
    }
}

/// Sets every byte of the segment to `pattern`.
func fill(_ segment: ExportedSegment, with pattern: UInt8) {
    segment.bytes.initializeMemory(as: UInt8.self, repeating: pattern)
}

/// Invalidates the whole segment `rounds` times. Inside each window the exporter writes pattern
/// `round + 1` into the lower half, waits 100 ms, writes the upper half and waits 100 ms more: a reader
/// that could see the range inside the window would find the lower half newer than the upper, which
/// `read-loop` counts as bad words; and the window is long enough for a reader looping over the range
/// to touch it inside. Returns the windows (CLOCK_MONOTONIC nanoseconds).
func invalidateRepeatedly(_ segment: ExportedSegment, rounds: Int) throws -> [(start: UInt64, end: UInt64)] {
    var windows: [(start: UInt64, end: UInt64)] = []
    let half = segment.size / 2
    for round in 1...rounds {
        usleep(50_000)  // the reader completes passes between windows
        var window: (start: UInt64, end: UInt64) = (0, 0)
        let report = try segment.invalidate(deadline: .seconds(20)) {
            window.start = SharedMemoryAccess.monotonicNanoseconds()
            let pattern = UInt8(round + 1)
            UnsafeMutableRawBufferPointer(rebasing: segment.bytes[..<half]).initializeMemory(as: UInt8.self, repeating: pattern)
            usleep(100_000)
            UnsafeMutableRawBufferPointer(rebasing: segment.bytes[half...]).initializeMemory(as: UInt8.self, repeating: pattern)
            usleep(100_000)
            window.end = SharedMemoryAccess.monotonicNanoseconds()
        }
        #expect(report.importers.map(\.outcome) == [.acknowledged], "round \(round)")
        windows.append(window)
    }
    return windows
}

@Suite("Read-only importers during invalidations", .serialized)
struct ReadOnlyInvalidationTests {
    /// The checks shared by the same-uid and other-uid variants.
    private func readerSleepsThroughWindows(broker: TestBroker, segment: ExportedSegment, asOtherUser: Bool) throws {
        fill(segment, with: 1)
        let identity = asOtherUser ? ["--as-uid", "\(OtherUser.uid)", "--as-gid", "\(OtherUser.gid)"] : []
        let importer = try ReadLoopImporter(broker: broker, segment: segment.id, extra: ["--readonly"] + identity)
        #expect(importer.attachedLine() == "attached block", "a read-only attachment blocks where userfaultfd works")
        #expect(importer.waitUntilReading())
        let rounds = 4
        let windows = try invalidateRepeatedly(segment, rounds: rounds)
        usleep(100_000)
        let summary = try #require(importer.summary(), "the importer died: \(importer.process.terminationSignal.map { "signal \($0)" } ?? "no summary")")
        #expect(importer.process.isRunning)
        #expect(summary.badWords == 0, "a reader saw the range mid-change or saw memory that is not the segment's")
        #expect(summary.pattern == UInt8(rounds + 1), "after the last end the reader sees the exporter's latest bytes")
        #expect(summary.lastPassEnd > windows.last!.end, "the reader keeps reading after the last window")
        for (round, window) in windows.enumerated() {
            #expect(summary.slept(through: window), "the reader must sleep through window \(round + 1) \(window); pauses: \(summary.pauses)")
        }
        for round in 0..<rounds {
            let sequence = 2 * round + 1
            #expect(importer.events.contains("begin \(sequence) 0 \(segment.size) reuse"))
            #expect(importer.events.contains("end \(sequence) reuse"))
        }
    }

    @Test("A read-only .block importer reading all the time sleeps through every window, then reads the new bytes")
    func readOnlyReaderSleepsThroughWindows() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 256 << 10)
        try readerSleepsThroughWindows(broker: broker, segment: segment, asOtherUser: false)
    }

    @Test("A read-only .block importer of another uid sleeps through every window too",
          .enabled(if: OtherUser.available, "needs root to run a probe as another uid"))
    func readOnlyReaderOfAnotherUserSleepsThroughWindows() throws {
        let broker = try TestBroker(mode: "0666", openDirectory: true)
        let segment = try broker.connect(name: "exporter").makeSegment(size: 256 << 10, permit: Permit(rawValue: 0o644))
        try readerSleepsThroughWindows(broker: broker, segment: segment, asOtherUser: true)
    }

    @Test("After the end a read-only attachment that was not touched during the window reads the new bytes",
          arguments: ["block", "revoke"])
    func readOnlyAccessComesBackAfterEnd(policy: String) throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        fill(segment, with: 1)
        let importer = try ReadLoopImporter(broker: broker, segment: segment.id,
                                            extra: ["--readonly", "--on-request", "--policy", policy])
        #expect(importer.attachedLine() == "attached \(policy)")
        #expect(importer.summary()?.pattern == 1)
        for round in 2...4 {
            try segment.invalidate(deadline: .seconds(20)) { fill(segment, with: UInt8(round)) }
            let summary = try #require(importer.summary(), "the importer died reading after end \(round - 1)")
            #expect(summary.pattern == UInt8(round))
            #expect(summary.badWords == 0)
        }
    }

    @Test("A read-only reader asleep in a window is woken when the segment is released, and then faults")
    func sleeperWokenByReleaseFaults() throws {
        let broker = try TestBroker()
        let exporter = try ChildProcess("xpmem-probe", ["export-and-invalidate", "--socket", broker.socketPath,
                                                        "--size", "\(256 << 10)", "--pattern", "3"])
        let id = try #require(exporter.readLine().flatMap { SegmentID($0) })
        // Without Swift's crash backtracer, so that the fault ends the process at once.
        let importer = try ReadLoopImporter(broker: broker, segment: id, extra: ["--readonly"],
                                            environment: ["SWIFT_BACKTRACE": "enable=no"])
        #expect(importer.attachedLine() == "attached block")
        #expect(importer.waitUntilReading())
        exporter.send("go")
        #expect(exporter.readLine() == "invalidating")
        #expect(importer.waitForEvent(prefix: "begin") != nil)
        usleep(300_000)  // the reader is asleep on the range by now
        #expect(importer.process.isRunning, "the reader sleeps, it does not fault, during the window")
        exporter.signal(SIGKILL)
        // The release revokes the mapping and wakes the sleeper, which faults at once: the process may
        // die before its release callback prints anything, so only the death is checked.
        importer.process.waitForExit(timeout: 20)
        #expect([SIGSEGV, SIGBUS].contains(importer.process.terminationSignal ?? 0),
                "woken onto an inaccessible reservation, the reader faults instead of sleeping for ever")
    }

    @Test("A read-only .revoke importer touching the range during the window faults")
    func readOnlyRevokeReaderFaults() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        fill(segment, with: 1)
        // Without Swift's crash backtracer: on a busy machine it can outlast the window, and once `end`
        // has mapped the range back the faulting read it lets resume succeeds.
        let importer = try ReadLoopImporter(broker: broker, segment: segment.id, extra: ["--readonly", "--policy", "revoke"],
                                            environment: ["SWIFT_BACKTRACE": "enable=no"])
        #expect(importer.attachedLine() == "attached revoke")
        _ = try segment.invalidate(deadline: .seconds(20)) { usleep(200_000) }
        importer.process.waitForExit(timeout: 20)
        #expect([SIGSEGV, SIGBUS].contains(importer.process.terminationSignal ?? 0))
    }
}

@Suite("Importers when the broker dies", .serialized)
struct BrokerLossTests {
    @Test("Broker killed mid-invalidation: sleeping importers wake with the segment mapped again and are told",
          arguments: [["--readonly"], []])
    func brokerDeathWakesSleepers(access: [String]) throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 256 << 10)
        fill(segment, with: 1)
        let importer = try ReadLoopImporter(broker: broker, segment: segment.id, extra: access)
        #expect(importer.attachedLine() == "attached block")
        #expect(importer.waitUntilReading())
        let report = try segment.beginInvalidation(deadline: .seconds(60))
        #expect(report.importers.map(\.outcome) == [.acknowledged])
        let windowStart = SharedMemoryAccess.monotonicNanoseconds()
        // Half now, half later, as in `invalidateRepeatedly`: a reader seeing the window finds bad words.
        let half = segment.size / 2
        UnsafeMutableRawBufferPointer(rebasing: segment.bytes[..<half]).initializeMemory(as: UInt8.self, repeating: 2)
        usleep(150_000)
        UnsafeMutableRawBufferPointer(rebasing: segment.bytes[half...]).initializeMemory(as: UInt8.self, repeating: 2)
        usleep(150_000)  // the reader, looping over the range, is asleep on it by now
        let killedAt = SharedMemoryAccess.monotonicNanoseconds()
        kill(broker.pid, SIGKILL)

        // Generous bounds: the machine may be busy; what matters is that the wait ends at all.
        #expect(importer.waitForEvent(prefix: "broker-lost", timeout: 20) == "broker-lost \(report.sequence)",
                "events: \(importer.events)")
        let deadline = Date().addingTimeInterval(20)
        var summary = importer.summary()
        while let current = summary, current.lastPassEnd <= killedAt, Date() < deadline {
            usleep(50_000)
            summary = importer.summary()
        }
        let woken = try #require(summary, "the importer died: \(importer.process.terminationSignal.map { "signal \($0)" } ?? "no summary")")
        #expect(woken.lastPassEnd > killedAt, "the reader must finish a pass after the broker's death")
        #expect(woken.slept(through: (windowStart, killedAt)), "the reader must sleep until the broker dies; pauses: \(woken.pauses)")
        #expect(woken.pattern == 2, "the reader sees what the exporter wrote inside the window")
        #expect(woken.badWords == 0)
        #expect(!importer.events.contains { $0.hasPrefix("end ") }, "no end ever came")
    }
}

@Suite("Overlapping invalidation windows on one attachment")
struct SuspendedWindowsTests {
    private func notice(_ sequence: UInt64, _ offset: Int, _ length: Int) -> InvalidationNotice {
        InvalidationNotice(segment: SegmentID(rawValue: 1), attachment: AttachmentID(rawValue: 1), sequence: sequence,
                           reason: .reuse, offset: offset, length: length)
    }

    /// Opens `notice`'s window, cutting what it asks to cut with `cut`; returns those ranges in order.
    private func open(_ windows: inout SuspendedWindows, _ notice: InvalidationNotice, cut: AccessCut) -> [[Int]] {
        var asked: [[Int]] = []
        windows.open(notice) { offset, length in
            asked.append([offset, length])
            return cut
        }
        return asked
    }

    /// Closes window `sequence`; returns its notice and the parts handed back, or nil if it was not open.
    private func close(_ windows: inout SuspendedWindows, _ sequence: UInt64)
        -> (notice: InvalidationNotice, uncovered: [SuspendedWindows.Part])?
    {
        var uncovered: [SuspendedWindows.Part] = []
        guard let notice = windows.close(sequence, giveBack: { uncovered.append($0) }) else {
            #expect(uncovered.isEmpty, "a window that is not open gives nothing back")
            return nil
        }
        return (notice, uncovered)
    }

    @Test("A part is cut by the first window over it and given back when the last one ends")
    func overlappingWindowsCutOnceAndGiveBackOnce() {
        var windows = SuspendedWindows()
        #expect(open(&windows, notice(1, 0, 64), cut: .sleepOnPrivateView) == [[0, 64]])

        // The second window overlaps the first's upper half: only what lies beyond it is cut anew.
        #expect(open(&windows, notice(3, 32, 64), cut: .reservation) == [[64, 32]])
        #expect(open(&windows, notice(3, 32, 64), cut: .reservation).isEmpty, "a repeated begin cuts nothing")

        let firstEnd = close(&windows, 1)
        #expect(firstEnd?.notice == notice(1, 0, 64))
        #expect(firstEnd?.uncovered == [.init(offset: 0, length: 32, cut: .sleepOnPrivateView, sequences: [])],
                "the half the second window still covers stays cut")
        #expect(close(&windows, 1) == nil)
        #expect(!windows.isEmpty)

        let secondEnd = close(&windows, 3)
        #expect(secondEnd?.uncovered == [
            .init(offset: 32, length: 32, cut: .sleepOnPrivateView, sequences: []),
            .init(offset: 64, length: 32, cut: .reservation, sequences: []),
        ], "each part is given back the way it was cut")
        #expect(windows.isEmpty && windows.parts.isEmpty)
    }

    @Test("A window across cut parts and gaps cuts only the gaps, in order")
    func windowAcrossPartsAndGaps() {
        var windows = SuspendedWindows()
        #expect(open(&windows, notice(1, 32, 32), cut: .sleepOnSharedMapping) == [[32, 32]])
        #expect(open(&windows, notice(2, 96, 32), cut: .sleepOnSharedMapping) == [[96, 32]])
        // From 16 to 144: gaps 16..<32, 64..<96 and 128..<144, and two parts split at nothing.
        #expect(open(&windows, notice(3, 16, 128), cut: .reservation) == [[16, 16], [64, 32], [128, 16]])
        #expect(windows.parts.map(\.offset) == [16, 32, 64, 96, 128])
        #expect(windows.parts.map { $0.sequences.count } == [1, 2, 1, 2, 1])
        // Ending the wide window gives back the gaps it cut, not the parts the others still cover.
        #expect(close(&windows, 3)?.uncovered.map(\.offset) == [16, 64, 128])
        #expect(windows.parts.map(\.offset) == [32, 96])
    }

    @Test("A window inside another cuts nothing, and closing all returns every window and part")
    func nestedWindowAndCloseAll() {
        var windows = SuspendedWindows()
        #expect(open(&windows, notice(5, 0, 96), cut: .sleepOnSharedMapping) == [[0, 96]])
        #expect(open(&windows, notice(7, 32, 32), cut: .reservation).isEmpty)
        #expect(windows.parts.map(\.offset) == [0, 32, 64])
        let all = windows.closeAll()
        #expect(all.notices.map(\.sequence) == [5, 7])
        #expect(all.parts.map(\.length) == [32, 32, 32])
        #expect(all.parts.allSatisfy { $0.cut == .sleepOnSharedMapping })
        #expect(windows.isEmpty && windows.parts.isEmpty)
    }

    @Test("When the segment moves to a fresh file, the uncut ranges are named and every cut part is marked as mapping the old one")
    func fileReplacedDuringAWindow() {
        var windows = SuspendedWindows()
        #expect(windows.uncutRanges(within: 96).map(\.offset) == [0])
        _ = open(&windows, notice(1, 32, 32), cut: .sleepOnSharedMapping)
        let uncut = windows.uncutRanges(within: 128)
        #expect(uncut.map(\.offset) == [0, 64] && uncut.map(\.length) == [32, 64])
        windows.markCutPartsMappingOldFile()
        // A part cut after the move maps the new file already.
        _ = open(&windows, notice(3, 96, 32), cut: .sleepOnSharedMapping)
        #expect(windows.parts.map(\.mapsOldFile) == [true, false])
        #expect(close(&windows, 1)?.uncovered.map(\.mapsOldFile) == [true])
    }
}
