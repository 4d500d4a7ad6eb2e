@preconcurrency import Glibc
import ArgumentParser
import Synchronization
import XPMEM
import XPMEMSystem

/// Reads the 8 words of the segment's first 64 bytes in a loop on its own thread and remembers every
/// pause longer than 20 ms and every read whose words disagree (a torn read).
final class WatchedWords: Sendable {
    struct Pause: Sendable {
        var from: UInt64
        var to: UInt64
        var valueAfter: UInt64
    }
    private struct State {
        var pauses: [Pause] = []
        var tornReads = 0
        var reads = 0
        var lastValue: UInt64 = 0
    }
    private let state = Mutex(State())
    private let address: UInt

    init(address: UnsafeRawPointer) { self.address = UInt(bitPattern: address) }

    func start() throws {
        try DetachedThread.start { [self] in
            let base = UnsafeRawPointer(bitPattern: address)!
            var last = SharedMemoryAccess.monotonicNanoseconds()
            while true {
                let begun = SharedMemoryAccess.monotonicNanoseconds()
                let first = SharedMemoryAccess.load(base)
                var torn = false
                var latest = first
                for word in 1..<8 {
                    latest = SharedMemoryAccess.load(base + word * 8)
                    if latest != first { torn = true }
                }
                let now = SharedMemoryAccess.monotonicNanoseconds()
                // A record read that slept part-way (it began before a window and finished after) may
                // mix old and new words, as any unsynchronised reader may; torn counts only reads made
                // in one go, which is what an access inside a window would be.
                let sleptInside = now - begun > 20_000_000
                state.withLock { state in
                    state.reads += 1
                    state.lastValue = latest
                    if torn && !sleptInside { state.tornReads += 1 }
                    if now - last > 20_000_000 { state.pauses.append(Pause(from: last, to: now, valueAfter: latest)) }
                }
                last = now
            }
        }
    }

    /// One line: `reads N torn T value V pauses from-to:value,...` (nanoseconds on CLOCK_MONOTONIC).
    var summary: String {
        state.withLock { state in
            let pauses = state.pauses.map { "\($0.from)-\($0.to):\($0.valueAfter)" }.joined(separator: ",")
            return "reads \(state.reads) torn \(state.tornReads) value \(state.lastValue) pauses \(pauses.isEmpty ? "none" : pauses)"
        }
    }
}

extension Probe {
    /// Attaches with a policy, then watches the first 64 bytes from a thread of its own while
    /// invalidations come and go. Prints `attached POLICY`, one line per callback, and on every line
    /// read from standard input (any text) a summary of what the watcher saw.
    struct Watch: ParsableCommand {
        @OptionGroup var options: ProbeOptions
        @Argument var segment: String
        @Option var policy: String = "block"
        @Option(help: "Milliseconds the willInvalidate callback sleeps (-1: forever).") var callbackSleep: Int = 0
        @Option(help: "Attach from this offset.") var offset: Int = 0
        @Option(help: "Attach this many bytes (default: to the end).") var length: Int?
        @Flag(help: "Do not read the memory, only report events.") var idle = false
        @Flag(help: "When the segment is released, touch the mapping (which must fault).") var touchAfterRelease = false

        func run() throws {
            try options.becomeRequestedUser()
            let broker = try XPMEMBroker.connect(socketPath: options.socket, name: "probe watch")
            let grant = try broker.get(SegmentID(segment)!)
            let sleepMilliseconds = callbackSleep
            let touch = touchAfterRelease
            let handlers = InvalidationHandlers(
                willInvalidate: { notice in
                    report("begin \(notice.sequence) \(notice.offset) \(notice.length) \(notice.reason)")
                    if sleepMilliseconds < 0 { while true { pause() } }
                    if sleepMilliseconds > 0 { usleep(UInt32(sleepMilliseconds) * 1000) }
                },
                didInvalidate: { notice in report("end \(notice.sequence)") },
                released: { _, reason in
                    report("release \(reason)")
                    if touch, let attachment = Watch.current.withLock({ $0 }) {
                        report("touching")
                        _ = SharedMemoryAccess.load(UnsafeRawPointer(bitPattern: attachment)!)
                        report("touch survived")
                    }
                })
            let attachment = try grant.attach(offset: offset, length: length,
                                              policy: policy == "revoke" ? .revoke : .block, handlers: handlers)
            Watch.current.withLock { $0 = UInt(bitPattern: attachment.bytes.baseAddress!) }
            let watcher = WatchedWords(address: attachment.bytes.baseAddress!)
            if !idle { try watcher.start() }
            report("attached \(attachment.policy)")
            while readLine() != nil { report(watcher.summary) }
            withExtendedLifetime(attachment) {}
        }

        /// The attachment's address, for the release callback to touch.
        static let current = Mutex<UInt?>(nil)
    }

    /// An exporter in a process of its own: makes a segment filled with a pattern, prints its id,
    /// then on a line from standard input starts an invalidation of the whole segment (held open by
    /// a `change` that waits for ever) and prints `invalidating`.
    struct ExportAndInvalidate: ParsableCommand {
        @OptionGroup var options: ProbeOptions
        @Option var size: Int = 1 << 20
        @Option var pattern: UInt8 = 1

        func run() throws {
            let broker = try XPMEMBroker.connect(socketPath: options.socket, name: "probe exporter")
            let segment = try broker.makeSegment(size: size)
            segment.bytes.initializeMemory(as: UInt8.self, repeating: pattern)
            report("\(segment.id)")
            _ = readLine()
            report("invalidating")
            try segment.invalidate(deadline: .seconds(60)) { while true { pause() } }
        }
    }
}
