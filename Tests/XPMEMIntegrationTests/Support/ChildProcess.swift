@preconcurrency import Glibc
import Foundation
import XPMEMSystem

/// Where the package's built executables are: beside the test bundle.
enum BuiltProducts {
    static let directory: String = {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (executable as NSString).deletingLastPathComponent
    }()

    static func path(_ name: String) -> String { directory + "/" + name }
}

/// A `PipedChild` as the tests use it: started from a built executable (or any program) with its
/// standard error captured, and with deadlines on every wait by default, so that a hung child fails
/// its test instead of hanging the run. Unchecked `Sendable`: a test may hand a child to a helper
/// thread, but uses it from one thread at a time (joining the helper before touching it again).
final class ChildProcess: @unchecked Sendable {
    private let child: PipedChild

    /// Starts `product` (a built executable name) with `arguments`.
    convenience init(_ product: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        try self.init(executable: BuiltProducts.path(product), arguments, environment: environment)
    }

    /// Starts the program at `executable` (a launcher such as mpirun, say) with `arguments`, and this
    /// process's environment with `environment` added.
    init(executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        child = try PipedChild(path: executable, arguments, environment: environment, standardError: .captured)
    }

    var pid: pid_t { child.pid }

    /// Whether the child still runs (an ended one is reaped by asking).
    var isRunning: Bool { !child.hasExited }

    /// The next line of standard output, or nil at end of output or after `timeout` seconds.
    func readLine(timeout: Double = 10) -> String? { child.readLine(timeout: .seconds(timeout)) }

    /// Every remaining line of standard output, until it ends or a line takes over `timeout` seconds.
    func remainingLines(timeout: Double = 30) -> [String] { child.remainingLines(timeout: .seconds(timeout)) }

    /// What the child wrote to standard error (read until it closes, so call it once the child exited).
    func standardError(timeout: Double = 30) -> String { child.standardError(timeout: .seconds(timeout)) }

    /// Writes a line to the child's standard input; false if the child has already closed it (it exited).
    @discardableResult
    func send(_ line: String) -> Bool { child.send(line) }

    func signal(_ number: Int32) { child.signal(ProcessSignal(rawValue: number)) }

    /// Waits up to `timeout` seconds for the exit and returns the status, shell style (128 + the
    /// signal if one ended it); kills the child and returns nil if it overruns.
    @discardableResult
    func waitForExit(timeout: Double = 30) -> Int32? { child.wait(timeout: .seconds(timeout))?.shellStatus }

    /// Whether the child was killed by a signal, and which.
    var terminationSignal: Int32? {
        if case .signaled(let signal) = child.termination { return signal }
        return nil
    }
}
