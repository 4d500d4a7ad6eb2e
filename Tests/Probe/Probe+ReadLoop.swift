@preconcurrency import Glibc
import ArgumentParser
import Synchronization
import XPMEM
import XPMEMSystem

/// Reads a whole attachment word by word, pass after pass, and checks what an invalidation promises a
/// reader: every word holds one byte repeated (the exporter only ever fills the segment with one
/// pattern, inside a window), and the patterns seen never go back (the exporter only raises it).
/// A zero word, a mixed word or an older pattern is a "bad" word: a read that saw the range while the
/// exporter was changing it, or saw memory that is not the segment's.
final class PatternReader: Sendable {
    private struct State {
        var passes = 0
        var badWords = 0
        var lastPattern: UInt8 = 0
        var lastPassEnd: UInt64 = 0
        var pauses: [(from: UInt64, to: UInt64)] = []
    }
    private let state = Mutex(State())
    private let base: UInt
    private let length: Int

    init(_ bytes: UnsafeRawBufferPointer) {
        base = UInt(bitPattern: bytes.baseAddress!)
        length = bytes.count
    }

    /// Reads one pass over every page; a page whose read finishes more than 20 ms after the previous
    /// one's is a pause (the thread slept, or was not scheduled).
    func readPass() {
        let words = pageSize / 8
        var previous = SharedMemoryAccess.monotonicNanoseconds()
        var bad = 0
        var pattern = state.withLock { $0.lastPattern }
        var pauses: [(from: UInt64, to: UInt64)] = []
        for page in stride(from: 0, to: length, by: pageSize) {
            let address = UnsafeRawPointer(bitPattern: base + UInt(page))!
            for index in 0..<words {
                let word = SharedMemoryAccess.load(address + index * 8)
                let byte = UInt8(truncatingIfNeeded: word)
                if word != UInt64(byte) &* 0x0101_0101_0101_0101 || byte == 0 || byte < pattern {
                    bad += 1
                } else {
                    pattern = byte
                }
            }
            let now = SharedMemoryAccess.monotonicNanoseconds()
            if now - previous > 20_000_000 { pauses.append((previous, now)) }
            previous = now
        }
        state.withLock { state in
            state.passes += 1
            state.badWords += bad
            state.lastPattern = pattern
            state.lastPassEnd = previous
            state.pauses += pauses
        }
    }

    /// Reads passes for ever on a thread of its own.
    func start() throws {
        try DetachedThread.start { [self] in
            while true { readPass() }
        }
    }

    /// One line: `passes P bad B pattern V last-pass NS pauses from-to,...` (CLOCK_MONOTONIC nanoseconds).
    var summary: String {
        state.withLock { state in
            let pauses = state.pauses.map { "\($0.from)-\($0.to)" }.joined(separator: ",")
            return "passes \(state.passes) bad \(state.badWords) pattern \(state.lastPattern) "
                + "last-pass \(state.lastPassEnd) pauses \(pauses.isEmpty ? "none" : pauses)"
        }
    }
}

extension Probe {
    /// Attaches (read-only with `--readonly`) and checks the whole range with a `PatternReader`, either
    /// on a thread reading all the time or, with `--on-request`, one pass per line of standard input.
    /// Prints `attached POLICY`, a line per event (`begin SEQ OFFSET LENGTH REASON`, `end SEQ REASON`,
    /// `release REASON`, `broker-lost SEQ,...`), and a summary line for every line read from
    /// standard input.
    struct ReadLoop: ParsableCommand {
        @OptionGroup var options: ProbeOptions
        @Argument var segment: String
        @Flag var readonly = false
        @Option var policy: String = "block"
        @Flag(help: "Read one pass per line of standard input instead of all the time.") var onRequest = false

        func run() throws {
            try options.becomeRequestedUser()
            guard let id = SegmentID(segment) else { throw ValidationError("bad segment id") }
            let broker = try XPMEMBroker.connect(socketPath: options.socket, name: "probe read-loop")
            let grant = try broker.get(id, access: readonly ? .readOnly : .readWrite)
            let handlers = InvalidationHandlers(
                willInvalidate: { report("begin \($0.sequence) \($0.offset) \($0.length) \($0.reason)") },
                didInvalidate: { report("end \($0.sequence) \($0.reason)") },
                released: { _, reason in report("release \(reason)") },
                brokerLost: { notice in
                    report("broker-lost \(notice.interrupted.map { "\($0.sequence)" }.joined(separator: ","))")
                })
            let attachment = try grant.attach(policy: policy == "revoke" ? .revoke : .block, handlers: handlers)
            let reader = PatternReader(UnsafeRawBufferPointer(attachment.bytes))
            if !onRequest { try reader.start() }
            report("attached \(attachment.policy)")
            while readLine() != nil {
                if onRequest { reader.readPass() }
                report(reader.summary)
            }
            withExtendedLifetime(attachment) {}
        }
    }
}
