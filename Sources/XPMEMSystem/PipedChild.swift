@preconcurrency import Glibc
import SystemPackage

/// A child process whose standard input and output are pipes to this one: started with
/// `posix_spawn`, read line by line, reaped with `waitpid`.
///
/// Foundation's `Process` is not used for this because inside the NUMA test machine's minimal
/// initramfs its `waitUntilExit` never returned (CoreFoundation could not create the socket pair
/// its run loop wakes up on), and benchmarks and checks run there.
public final class PipedChild {
    public let pid: pid_t
    private let toChild: OwnedDescriptor
    private let fromChild: OwnedDescriptor
    private var buffered: [UInt8] = []
    private var termination: ProcessLauncher.Termination?

    /// Starts `path` with `arguments` (not including argv[0]) and this process's environment;
    /// standard error is inherited.
    public init(path: String, _ arguments: [String]) throws(Errno) {
        let input = try Pipe.closeOnExec()
        let output = try Pipe.closeOnExec()
        pid = try ProcessLauncher.spawn(path: path, arguments: [path] + arguments,
                                        environment: ProcessLauncher.currentEnvironment(),
                                        standardInput: input.readEnd.fileDescriptor,
                                        standardOutput: output.writeEnd.fileDescriptor)
        toChild = input.takeWriteEnd()
        fromChild = output.takeReadEnd()
        // The child's ends close here as `input` and `output` go out of scope.
    }

    /// The next line the child prints, or nil once its output ends.
    public func readLine() -> String? {
        while true {
            if let newline = buffered.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffered[..<newline], as: UTF8.self)
                buffered.removeSubrange(...newline)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = read(fromChild.rawValue, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 {
                guard !buffered.isEmpty else { return nil }
                defer { buffered.removeAll() }
                return String(decoding: buffered, as: UTF8.self)
            }
            buffered.append(contentsOf: chunk[..<count])
        }
    }

    /// Every line until the child's output ends.
    public func remainingLines() -> [String] {
        var lines: [String] = []
        while let line = readLine() { lines.append(line) }
        return lines
    }

    /// Writes a line to the child's standard input.
    public func send(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(toChild.rawValue, $0.baseAddress, $0.count) }
    }

    /// Waits for the child to end and returns its status, shell style (128 + signal if killed).
    @discardableResult
    public func wait() -> Int32 {
        if termination == nil { termination = ProcessLauncher.waitForExit(pid) }
        return termination?.shellStatus ?? -1
    }

    /// Whether the child has ended (reaping it then), without blocking.
    public var hasExited: Bool {
        if termination == nil, let reaped = ProcessLauncher.reap(pid) { termination = reaped.termination }
        return termination != nil
    }

    /// Sends `signal` unless the child was already reaped, then waits for it.
    @discardableResult
    public func stop(signal: ProcessSignal = .terminate) -> Int32 {
        // An ended child that is not reaped yet still owns its pid, so this cannot hit a stranger.
        if termination == nil { try? signal.send(to: pid) }
        return wait()
    }

    deinit {
        if termination == nil {
            kill(pid, SIGKILL)
            termination = ProcessLauncher.waitForExit(pid)
        }
    }
}

/// Both ends of a pipe, close-on-exec (posix_spawn's dup2 clears the flag on the copies a child
/// gets as its standard streams, so other children inherit nothing).
struct Pipe: ~Copyable {
    var readEnd: OwnedDescriptor
    var writeEnd: OwnedDescriptor

    /// Keeps the write end, closing the read end.
    consuming func takeWriteEnd() -> OwnedDescriptor {
        readEnd.close()
        return writeEnd
    }

    /// Keeps the read end, closing the write end.
    consuming func takeReadEnd() -> OwnedDescriptor {
        writeEnd.close()
        return readEnd
    }
}
