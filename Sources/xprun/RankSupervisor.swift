import SystemPackage
import XPMEMSystem

/// Watches the ranks of one job: reaps them, forwards signals, stops everyone when one fails, and
/// (with --tag-output) prefixes their output lines.
///
/// Everything arrives through one epoll loop: SIGCHLD/SIGINT/SIGTERM/SIGHUP through a signal inbox
/// (they are blocked for xprun's thread; ranks start with them unblocked), rank output through
/// pipes.
struct RankSupervisor: ~Copyable {
    private struct Rank {
        let number: Int
        let pid: Int32
        var termination: ProcessLauncher.Termination?
    }

    /// One rank's standard output or error, and the partial line read so far.
    private struct OutputStream {
        let rank: Int
        let target: StandardStream
        /// nil once the rank's end is closed and everything was read (dropping it closed ours).
        var pipe: OutputPipe?
        var pending: [UInt8] = []
    }

    private let signals: SignalInbox
    private let poll: EventPoll<SupervisorToken>
    private let tagOutput: Bool
    private var ranks: [Rank] = []
    private var streams: [OutputStream] = []
    private var firstFailure: (rank: Int, termination: ProcessLauncher.Termination)?
    private var forwardedSignal: ProcessSignal?
    private var killDeadline: UInt64?

    init(tagOutput: Bool) throws(Errno) {
        let signals = try SignalInbox([.childStatusChanged, .interrupt, .terminate, .hangUp])
        let poll = try EventPoll<SupervisorToken>()
        try poll.add(signals.descriptor, events: .readable, token: .signals)
        self.signals = signals
        self.poll = poll
        self.tagOutput = tagOutput
    }

    mutating func start(rank: Int, path: String, arguments: [String], environment: [String], cpu: Int?) throws(Errno) {
        guard tagOutput else {
            let pid = try ProcessLauncher.spawn(path: path, arguments: arguments, environment: environment, cpu: cpu)
            ranks.append(Rank(number: rank, pid: pid))
            return
        }
        let child = try ProcessLauncher.spawnCapturingOutput(path: path, arguments: arguments,
                                                             environment: environment, cpu: cpu)
        ranks.append(Rank(number: rank, pid: child.pid))
        try watch(child.standardOutput, of: rank, to: .output)
        try watch(child.standardError, of: rank, to: .error)
    }

    /// Relays `pipe`'s lines from now on. A pipe that cannot be watched is dropped, closing it, so
    /// the loop never waits for output it cannot see.
    private mutating func watch(_ pipe: OutputPipe, of rank: Int, to target: StandardStream) throws(Errno) {
        try poll.add(pipe.descriptor, events: .readable, token: .stream(streams.count))
        streams.append(OutputStream(rank: rank, target: target, pipe: pipe))
    }

    /// Sends SIGTERM to every running rank (SIGKILL follows 3 s later) after printing `reason`.
    mutating func stopAll(reason: String) {
        Self.report(reason)
        signalRunning(.terminate)
        if killDeadline == nil { killDeadline = SharedMemoryAccess.monotonicNanoseconds() + 3_000_000_000 }
    }

    /// Runs until every rank has ended and its output is drained; returns xprun's exit status.
    mutating func wait(timeout: Double?) -> Int32 {
        let timeoutDeadline = timeout.map { SharedMemoryAccess.monotonicNanoseconds() + UInt64($0 * 1e9) }
        var timedOut = false
        while ranks.contains(where: { $0.termination == nil }) || streams.contains(where: { $0.pipe != nil }) {
            // Wakes at least every 100 ms to check the deadlines; a failed wait is treated as a timeout.
            let ready = (try? poll.wait(timeoutMilliseconds: 100)) ?? []
            drainSignals()
            for event in ready {
                if case .stream(let index) = event.token { readOutput(ofStream: index) }
            }
            reapRanks()
            let now = SharedMemoryAccess.monotonicNanoseconds()
            if let timeout, let deadline = timeoutDeadline, now >= deadline, !timedOut,
               ranks.contains(where: { $0.termination == nil }) {
                timedOut = true
                stopAll(reason: "xprun: timed out after \(timeout) s; stopping all ranks")
            }
            if let deadline = killDeadline, now >= deadline {
                signalRunning(.kill)
                killDeadline = nil
            }
        }
        if let failure = firstFailure { return failure.termination.shellStatus == 0 ? 1 : failure.termination.shellStatus }
        if let signal = forwardedSignal { return 128 + signal.rawValue }
        return timedOut ? 124 : 0
    }

    private mutating func drainSignals() {
        while let signal = signals.next() {
            guard signal != .childStatusChanged else { continue }
            if forwardedSignal == nil { Self.report("xprun: received \(signal); forwarding it to every rank") }
            forwardedSignal = signal
            signalRunning(signal)
            if killDeadline == nil { killDeadline = SharedMemoryAccess.monotonicNanoseconds() + 5_000_000_000 }
        }
    }

    private mutating func reapRanks() {
        while let (pid, termination) = ProcessLauncher.reap() {
            guard let index = ranks.firstIndex(where: { $0.pid == pid }) else { continue }
            ranks[index].termination = termination
            if !termination.succeeded && firstFailure == nil && forwardedSignal == nil {
                let rank = ranks[index].number
                firstFailure = (rank, termination)
                stopAll(reason: "xprun: rank \(rank) (pid \(pid)) \(termination); stopping the other ranks")
            }
        }
    }

    private func signalRunning(_ signal: ProcessSignal) {
        // A rank that exited but is not reaped yet still owns its pid, so this cannot hit a stranger;
        // the error it may give (the rank is gone) needs no action.
        for rank in ranks where rank.termination == nil { try? signal.send(to: rank.pid) }
    }

    private mutating func readOutput(ofStream index: Int) {
        guard streams.indices.contains(index), let pipe = streams[index].pipe else { return }
        // A read error ends the stream like end of file: nothing more can come from it.
        let chunk = (try? pipe.read()) ?? []
        if chunk.isEmpty {
            if !streams[index].pending.isEmpty { emit(streams[index].pending, of: streams[index]) }
            streams[index].pending.removeAll()
            try? poll.remove(pipe.descriptor)
            streams[index].pipe = nil
            return
        }
        streams[index].pending += chunk
        while let newline = streams[index].pending.firstIndex(of: UInt8(ascii: "\n")) {
            emit(Array(streams[index].pending[..<newline]), of: streams[index])
            streams[index].pending.removeSubrange(...newline)
        }
    }

    /// Writes one line with its rank's prefix, in one write so lines of different ranks never mix.
    private func emit(_ line: [UInt8], of stream: OutputStream) {
        let prefix = "[\(stream.rank)]<\(stream.target == .output ? "stdout" : "stderr")>: "
        stream.target.write(Array(prefix.utf8) + line + [UInt8(ascii: "\n")])
    }

    static func report(_ message: String) { StandardStream.error.writeLine(message) }
}
