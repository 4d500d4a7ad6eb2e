@preconcurrency import Glibc
import Foundation
import XPMEM
import XPMEMSystem

/// The broker the benchmark talks to: one already running at the socket, or a private one it starts.
final class BenchEnvironment {
    let socketPath: String
    private var privateBroker: PipedChild?
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
        privateBroker = try PipedChild(path: BenchEnvironment.sibling("xpmemd"),
                                       ["--socket", socketPath, "--log-level", "error"])
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
        privateBroker?.stop()
        privateBroker = nil
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
    private let child: PipedChild

    init(_ path: String, _ arguments: [String]) throws { child = try PipedChild(path: path, arguments) }

    var pid: pid_t { child.pid }

    /// The next line the helper prints (blocking); empty at the end of its output.
    func readLine() -> String { child.readLine() ?? "" }

    func send(_ line: String) { child.send(line) }

    func stop() { child.stop(signal: SIGKILL) }
}
