@preconcurrency import Glibc
import Foundation

/// Where the package's built executables are: beside the test bundle.
enum BuiltProducts {
    static let directory: String = {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (executable as NSString).deletingLastPathComponent
    }()

    static func path(_ name: String) -> String { directory + "/" + name }
}

/// A real child process started from one of the built executables, with its standard output read
/// line by line (with deadlines, so a hung child fails the test instead of hanging it).
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    private let output = Pipe()
    private let errors = Pipe()
    private let input = Pipe()
    private var buffered: [UInt8] = []

    /// Starts `product` (a built executable name) with `arguments`.
    convenience init(_ product: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        try self.init(executable: BuiltProducts.path(product), arguments, environment: environment)
    }

    /// Starts the program at `executable` (a launcher such as mpirun, say) with `arguments`.
    init(executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment
        for (key, value) in environment { merged[key] = value }
        process.environment = merged
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = input
        try process.run()
    }

    var pid: pid_t { process.processIdentifier }

    /// The next line of standard output, or nil at end of output or after `timeout` seconds.
    func readLine(timeout: Double = 10) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        let descriptor = output.fileHandleForReading.fileDescriptor
        while true {
            if let newline = buffered.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffered[..<newline], as: UTF8.self)
                buffered.removeSubrange(...newline)
                return line
            }
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else { return nil }
            var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, Int32(remaining * 1000)) > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = read(descriptor, &chunk, chunk.count)
            if count <= 0 {
                if buffered.isEmpty { return nil }
                defer { buffered.removeAll() }
                return String(decoding: buffered, as: UTF8.self)
            }
            buffered.append(contentsOf: chunk[..<count])
        }
    }

    /// Every remaining line of standard output, after the process exits.
    func remainingLines(timeout: Double = 30) -> [String] {
        var lines: [String] = []
        while let line = readLine(timeout: timeout) { lines.append(line) }
        return lines
    }

    /// What the child wrote to standard error (read after it exits).
    func standardError() -> String {
        String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    /// Writes a line to the child's standard input.
    /// Writes a line to the child's standard input; false if the child has already closed it (it
    /// exited). Broken pipes are ignored process-wide, so such a write fails with EPIPE instead of
    /// killing the test runner with SIGPIPE.
    @discardableResult
    func send(_ line: String) -> Bool {
        _ = Self.brokenPipesIgnored
        do {
            try input.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8))
            return true
        } catch {
            return false
        }
    }

    private static let brokenPipesIgnored: Void = { _ = Glibc.signal(SIGPIPE, SIG_IGN) }()

    func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// Waits up to `timeout` seconds for the exit; kills the child and returns nil if it overruns.
    @discardableResult
    func waitForExit(timeout: Double = 30) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        if process.isRunning {
            signal(SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    /// Whether the child was killed by a signal, and which.
    var terminationSignal: Int32? {
        process.terminationReason == .uncaughtSignal ? process.terminationStatus : nil
    }

    deinit {
        if process.isRunning {
            signal(SIGKILL)
            process.waitUntilExit()
        }
    }
}
