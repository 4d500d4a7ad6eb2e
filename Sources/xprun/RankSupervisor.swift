@preconcurrency import Glibc
import SystemPackage
import XPMEMSystem

/// Watches the ranks of one job: reaps them, forwards signals, stops everyone when one fails, and
/// (with --tag-output) prefixes their output lines.
///
/// Everything arrives through one poll(2) loop: SIGCHLD/SIGINT/SIGTERM/SIGHUP through a signalfd
/// (they are blocked for xprun's thread; ranks start with them unblocked), rank output through
/// pipes.
struct RankSupervisor: ~Copyable {
    private struct Rank {
        let number: Int
        let pid: pid_t
        var termination: ProcessLauncher.Termination?
    }

    /// One pipe carrying a rank's standard output or error, and the partial line read so far.
    private struct OutputStream {
        let rank: Int
        let descriptor: CInt
        let target: CInt
        var pending: [UInt8] = []
        var open = true
    }

    private let signals: OwnedDescriptor
    private let tagOutput: Bool
    private var ranks: [Rank] = []
    private var streams: [OutputStream] = []
    private var firstFailure: (rank: Int, termination: ProcessLauncher.Termination)?
    private var forwardedSignal: CInt?
    private var killDeadline: UInt64?

    init(tagOutput: Bool) throws {
        signals = try ProcessHandle.signalDescriptor(for: [SIGCHLD, SIGINT, SIGTERM, SIGHUP])
        self.tagOutput = tagOutput
    }

    mutating func start(rank: Int, path: String, arguments: [String], environment: [String], cpu: Int?) throws {
        var output: [CInt] = [-1, -1], errors: [CInt] = [-1, -1]
        if tagOutput {
            // Close-on-exec, so that each rank inherits only its own two ends (as fds 1 and 2).
            guard pipe(&output) == 0, pipe(&errors) == 0 else { throw Errno(rawValue: errno) }
            for descriptor in output + errors { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        }
        defer {
            if tagOutput {
                close(output[1])
                close(errors[1])
            }
        }
        let pid = try ProcessLauncher.spawn(path: path, arguments: arguments, environment: environment,
                                            standardOutput: tagOutput ? output[1] : nil,
                                            standardError: tagOutput ? errors[1] : nil, cpu: cpu)
        ranks.append(Rank(number: rank, pid: pid))
        if tagOutput {
            streams.append(OutputStream(rank: rank, descriptor: output[0], target: 1))
            streams.append(OutputStream(rank: rank, descriptor: errors[0], target: 2))
        }
    }

    /// Sends SIGTERM to every running rank (SIGKILL follows 3 s later) after printing `reason`.
    mutating func stopAll(reason: String) {
        Self.report(reason)
        signalRunning(SIGTERM)
        if killDeadline == nil { killDeadline = SharedMemoryAccess.monotonicNanoseconds() + 3_000_000_000 }
    }

    /// Runs until every rank has ended and its output is drained; returns xprun's exit status.
    mutating func wait(timeout: Double?) -> Int32 {
        let timeoutDeadline = timeout.map { SharedMemoryAccess.monotonicNanoseconds() + UInt64($0 * 1e9) }
        var timedOut = false
        while ranks.contains(where: { $0.termination == nil }) || streams.contains(where: \.open) {
            var descriptors = [pollfd(fd: signals.rawValue, events: Int16(POLLIN), revents: 0)]
            descriptors += streams.filter(\.open).map { pollfd(fd: $0.descriptor, events: Int16(POLLIN), revents: 0) }
            _ = poll(&descriptors, nfds_t(descriptors.count), 100)
            drainSignals()
            for polled in descriptors.dropFirst() where polled.revents != 0 { readOutput(from: polled.fd) }
            reapRanks()
            let now = SharedMemoryAccess.monotonicNanoseconds()
            if let deadline = timeoutDeadline, now >= deadline, !timedOut, ranks.contains(where: { $0.termination == nil }) {
                timedOut = true
                stopAll(reason: "xprun: timed out after \(timeout!) s; stopping all ranks")
            }
            if let deadline = killDeadline, now >= deadline {
                signalRunning(SIGKILL)
                killDeadline = nil
            }
        }
        if let failure = firstFailure { return failure.termination.shellStatus == 0 ? 1 : failure.termination.shellStatus }
        if let signal = forwardedSignal { return 128 + signal }
        return timedOut ? 124 : 0
    }

    private mutating func drainSignals() {
        while let signal = try? ProcessHandle.nextSignal(on: signals) {
            guard signal != SIGCHLD else { continue }
            if forwardedSignal == nil { Self.report("xprun: received signal \(signal); forwarding it to every rank") }
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

    private func signalRunning(_ signal: CInt) {
        for rank in ranks where rank.termination == nil { kill(rank.pid, signal) }
    }

    private mutating func readOutput(from descriptor: CInt) {
        guard let index = streams.firstIndex(where: { $0.descriptor == descriptor && $0.open }) else { return }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = read(descriptor, &chunk, chunk.count)
        if count <= 0 {
            if !streams[index].pending.isEmpty { emit(streams[index].pending, of: streams[index]) }
            streams[index].pending.removeAll()
            streams[index].open = false
            close(descriptor)
            return
        }
        streams[index].pending += chunk[..<count]
        while let newline = streams[index].pending.firstIndex(of: UInt8(ascii: "\n")) {
            emit(Array(streams[index].pending[..<newline]), of: streams[index])
            streams[index].pending.removeSubrange(...newline)
        }
    }

    /// Writes one line with its rank's prefix, in one write(2) so lines of different ranks never mix.
    private func emit(_ line: [UInt8], of stream: OutputStream) {
        let prefix = "[\(stream.rank)]<\(stream.target == 1 ? "stdout" : "stderr")>: "
        Self.write(Array(prefix.utf8) + line + [UInt8(ascii: "\n")], to: stream.target)
    }

    static func report(_ message: String) { write(Array((message + "\n").utf8), to: 2) }

    private static func write(_ bytes: [UInt8], to descriptor: CInt) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if written <= 0 {
                if errno == EINTR { continue }
                return
            }
            offset += written
        }
    }
}
