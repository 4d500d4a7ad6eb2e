@preconcurrency import Glibc
import Foundation
import XPMEM
import XPMEMSystem

/// The broker the benchmark talks to: one already running at the socket, or a private one it starts.
final class BenchEnvironment {
    let socketPath: String
    private var privateBroker: Process?
    private var privateDirectory: String?

    init(socket: String?) throws {
        let requested = BrokerSocketPath.resolve(explicit: socket)
        if (try? XPMEMBroker.connect(socketPath: requested, name: "bench probe")) != nil {
            socketPath = requested
            return
        }
        var template = Array("/tmp/xpmem-bench-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw XPMEMError(.systemCallFailed, "mkdtemp failed") }
        let directory = String(cString: made)
        socketPath = directory + "/xpmemd.sock"
        privateDirectory = directory
        let broker = Process()
        broker.executableURL = URL(fileURLWithPath: BenchEnvironment.sibling("xpmemd"))
        broker.arguments = ["--socket", socketPath, "--log-level", "error"]
        try broker.run()
        privateBroker = broker
        for _ in 0..<500 {
            if (try? XPMEMBroker.connect(socketPath: socketPath, name: "bench probe")) != nil { return }
            usleep(10_000)
        }
        throw XPMEMError(.brokerUnavailable, "the private xpmemd did not start at \(socketPath)")
    }

    func connect(_ name: String) throws -> XPMEMBroker { try XPMEMBroker.connect(socketPath: socketPath, name: name) }

    /// Starts this program again with a hidden helper subcommand.
    func helper(_ arguments: [String]) throws -> HelperProcess {
        try HelperProcess(BenchEnvironment.sibling("xpmem-bench"), arguments)
    }

    func stop() {
        if let broker = privateBroker, broker.isRunning {
            broker.terminate()
            broker.waitUntilExit()
        }
        if let directory = privateDirectory { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// A program built beside this one.
    static func sibling(_ name: String) -> String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (executable as NSString).deletingLastPathComponent + "/" + name
    }
}

/// A helper process started by the benchmark, talked to through its standard input and output.
final class HelperProcess {
    private let process = Process()
    private let output = Pipe()
    private let input = Pipe()

    init(_ path: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = output
        process.standardInput = input
        try process.run()
    }

    var pid: pid_t { process.processIdentifier }

    /// The next line the helper prints (blocking).
    func readLine() -> String {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while read(output.fileHandleForReading.fileDescriptor, &byte, 1) == 1 {
            if byte == UInt8(ascii: "\n") { break }
            bytes.append(byte)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    func send(_ line: String) { input.fileHandleForWriting.write(Data((line + "\n").utf8)) }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}
