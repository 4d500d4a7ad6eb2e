@preconcurrency import Glibc
import Foundation
import XPMEM
import XPMEMSystem

/// The broker the checks use: a private xpmemd open to every uid (the cooperative checks run as
/// another user), or one already running.
final class CheckBroker {
    let socketPath: String
    private var daemon: Helper?
    private var directory: String?

    init() throws {
        var template = Array("/tmp/xpmem-numa-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw POSIXError(.EIO) }
        let directory = String(cString: made)
        chmod(directory, 0o755)
        self.directory = directory
        socketPath = directory + "/xpmemd.sock"
        daemon = try Helper(path: Helper.sibling("xpmemd"), ["--socket", socketPath, "--mode", "0666", "--log-level", "error"])
        for _ in 0..<500 {
            if (try? XPMEMBroker.connect(socketPath: socketPath, name: "readiness")) != nil { return }
            usleep(10_000)
        }
        throw XPMEMError(.brokerUnavailable, "xpmemd did not start at \(socketPath)")
    }

    init(existing socketPath: String) { self.socketPath = socketPath }

    func connect(_ name: String) throws -> XPMEMBroker { try XPMEMBroker.connect(socketPath: socketPath, name: name) }

    func stop() {
        daemon?.terminate()
        daemon = nil
        if let directory { try? FileManager.default.removeItem(atPath: directory) }
    }
}

/// A child process built beside this program, with its standard input and output piped.
///
/// Spawned with posix_spawn rather than Foundation's `Process`: inside the test machine's minimal
/// initramfs, `Process.waitUntilExit` never returned (CoreFoundation could not set up its run-loop
/// wake-up socket pair there).
final class Helper {
    private let pid: pid_t
    private let toChild: CInt
    private let fromChild: CInt
    private var buffered: [UInt8] = []
    private var exitStatus: Int32?

    init(path: String, _ arguments: [String]) throws {
        var input: [CInt] = [0, 0], output: [CInt] = [0, 0]
        guard pipe(&input) == 0, pipe(&output) == 0 else { throw POSIXError(.EMFILE) }
        for descriptor in input + output { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        do {
            pid = try ProcessLauncher.spawn(path: path, arguments: [path] + arguments,
                                            environment: ProcessLauncher.currentEnvironment(),
                                            standardInput: input[0], standardOutput: output[1])
        } catch {
            for descriptor in input + output { close(descriptor) }
            throw error
        }
        close(input[0])
        close(output[1])
        toChild = input[1]
        fromChild = output[0]
    }

    static func sibling(_ name: String) -> String { FileSystem.executableDirectory() + "/" + name }

    /// The next line of output, or nil at its end.
    func readLine() -> String? {
        while true {
            if let newline = buffered.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffered[..<newline], as: UTF8.self)
                buffered.removeSubrange(...newline)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = read(fromChild, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 {
                guard !buffered.isEmpty else { return nil }
                defer { buffered.removeAll() }
                return String(decoding: buffered, as: UTF8.self)
            }
            buffered.append(contentsOf: chunk[..<count])
        }
    }

    func remainingLines() -> [String] {
        var lines: [String] = []
        while let line = readLine() { lines.append(line) }
        return lines
    }

    func send(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(toChild, $0.baseAddress, $0.count) }
    }

    /// Waits for the child and returns its shell-style status.
    @discardableResult
    func wait() -> Int32 {
        if let exitStatus { return exitStatus }
        let status = ProcessLauncher.waitForExit(pid)?.shellStatus ?? -1
        exitStatus = status
        return status
    }

    func terminate() {
        if exitStatus == nil { kill(pid, SIGTERM) }
        wait()
    }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            wait()
        }
        close(toChild)
        close(fromChild)
    }
}
