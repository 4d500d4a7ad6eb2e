import Foundation
import XPMEM
import XPMEMRunKit
import XPMEMSystem

/// The broker the benchmark talks to: one already running at the socket, or a private one it starts.
final class BenchEnvironment {
    private let broker: BrokerForRun
    var socketPath: String { broker.socketPath }

    init(socket: String?) throws { broker = try BrokerForRun(requested: socket, for: "xpmem-bench") }

    func connect(_ name: String) throws -> XPMEMBroker { try XPMEMBroker.connect(socketPath: socketPath, name: name) }

    /// Starts this program again with a hidden helper subcommand.
    func helper(_ arguments: [String]) throws -> HelperProcess {
        try HelperProcess(BenchEnvironment.sibling("xpmem-bench"), arguments)
    }

    func stop() { broker.stop() }

    /// A program built beside this one.
    static func sibling(_ name: String) -> String { FileSystem.executableDirectory() + "/" + name }
}

/// A helper process started by the benchmark, talked to through its standard input and output.
final class HelperProcess {
    private let child: PipedChild

    init(_ path: String, _ arguments: [String]) throws { child = try PipedChild(path: path, arguments) }

    var pid: pid_t { child.pid }

    /// The next line the helper prints (blocking); empty at the end of its output.
    func readLine() -> String { child.readLine() ?? "" }

    func send(_ line: String) { child.send(line) }

    func stop() { child.stop(signal: .kill) }
}
