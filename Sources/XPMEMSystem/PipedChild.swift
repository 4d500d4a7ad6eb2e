@preconcurrency import Glibc
import SystemPackage

/// A child process whose standard input and output (and, when asked, standard error) are pipes to
/// this one: started with `posix_spawn`, read line by line with optional deadlines, signalled, and
/// reaped with `waitpid`. The one way launchers, benchmarks, checks and tests run a program and read it.
///
/// Foundation's `Process` is not used for this because inside the NUMA test machine's minimal
/// initramfs its `waitUntilExit` never returned (CoreFoundation could not create the socket pair
/// its run loop wakes up on), and benchmarks and checks run there.
public final class PipedChild {
    /// Where the child's standard error goes.
    public enum ErrorOutput: Sendable {
        /// To this process's standard error.
        case inherited
        /// To a pipe read by `standardError(timeout:)`.
        case captured
    }

    public let pid: pid_t
    private let toChild: OwnedDescriptor
    private let fromChild: OwnedDescriptor
    private let errorsFromChild: OwnedDescriptor?
    private var buffered: [UInt8] = []
    private var capturedErrors: [UInt8] = []
    /// How the child ended, once it was reaped (after which its pid is no longer ours to signal).
    public private(set) var termination: ProcessLauncher.Termination?

    /// Starts `path` with `arguments` (not including argv[0]) and this process's environment with
    /// `environment` added (replacing variables of the same name).
    public init(path: String, _ arguments: [String], environment: [String: String] = [:],
                standardError: ErrorOutput = .inherited) throws(Errno) {
        let input = try Pipe.closeOnExec()
        let output = try Pipe.closeOnExec()
        let errors: Pipe? = standardError == .captured ? try Pipe.closeOnExec() : nil
        let errorsWriteEnd: FileDescriptor? = switch errors {
        case .some(let pipe): pipe.writeEnd.fileDescriptor
        case .none: nil
        }
        pid = try ProcessLauncher.spawn(path: path, arguments: [path] + arguments,
                                        environment: ProcessLauncher.currentEnvironment(adding: environment),
                                        standardInput: input.readEnd.fileDescriptor,
                                        standardOutput: output.writeEnd.fileDescriptor, standardError: errorsWriteEnd)
        toChild = input.takeWriteEnd()
        fromChild = output.takeReadEnd()
        errorsFromChild = switch consume errors {
        case .some(let pipe): pipe.takeReadEnd()
        case .none: nil
        }
        // The child's ends close here as the pipes go out of scope.
    }

    /// The next line the child prints to standard output; nil once its output ends, or when no whole
    /// line came within `timeout` (nil: wait as long as it takes).
    public func readLine(timeout: Duration? = nil) -> String? {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            if let newline = buffered.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffered[..<newline], as: UTF8.self)
                buffered.removeSubrange(...newline)
                return line
            }
            if let deadline, !Self.waitReadable(fromChild, until: deadline) { return nil }
            let chunk = Self.read(fromChild)
            if chunk.isEmpty {
                guard !buffered.isEmpty else { return nil }
                defer { buffered.removeAll() }
                return String(decoding: buffered, as: UTF8.self)
            }
            buffered += chunk
        }
    }

    /// Every line until the child's output ends; with `timeout`, also stops at the first line that
    /// takes longer than that to come.
    public func remainingLines(timeout: Duration? = nil) -> [String] {
        var lines: [String] = []
        while let line = readLine(timeout: timeout) { lines.append(line) }
        return lines
    }

    /// Everything the child wrote to standard error, read until the child (and whoever inherited the
    /// pipe from it) closed it or `timeout` passed; empty unless it was `.captured`.
    public func standardError(timeout: Duration) -> String {
        switch errorsFromChild {
        case .some(let errors):
            let deadline = ContinuousClock.now + timeout
            while Self.waitReadable(errors, until: deadline) {
                let chunk = Self.read(errors)
                if chunk.isEmpty { break }
                capturedErrors += chunk
            }
        case .none:
            break
        }
        return String(decoding: capturedErrors, as: UTF8.self)
    }

    /// Writes a line to the child's standard input; false if it could not (the child closed its end,
    /// say, by exiting). The corresponding C function is `write`.
    @discardableResult
    public func send(_ line: String) -> Bool {
        let bytes = Array((line + "\n").utf8)
        // A write to a pipe nobody reads raises SIGPIPE, whose default action would end this process:
        // keep it blocked on this thread for the write and take back the one the write raised.
        var brokenPipe = sigset_t()
        sigemptyset(&brokenPipe)
        sigaddset(&brokenPipe, SIGPIPE)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &brokenPipe, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        var offset = 0
        while offset < bytes.count {
            let written = try? valueOrErrno {
                bytes[offset...].withUnsafeBytes { Glibc.write(toChild.rawValue, $0.baseAddress, $0.count) }
            }
            guard let written else {
                var noWait = timespec()
                _ = sigtimedwait(&brokenPipe, nil, &noWait)
                return false
            }
            offset += written
        }
        return true
    }

    /// Sends `signal` unless the child was already reaped. The corresponding C function is `kill`.
    public func signal(_ signal: ProcessSignal) {
        // An ended child that is not reaped yet still owns its pid, so this cannot hit a stranger; the
        // error it may give (the child is gone) needs no action.
        if termination == nil { try? signal.send(to: pid) }
    }

    /// Waits for the child to end and returns its status, shell style (128 + signal if killed).
    @discardableResult
    public func wait() -> Int32 {
        if termination == nil { termination = ProcessLauncher.waitForExit(pid) }
        return termination?.shellStatus ?? -1
    }

    /// Waits up to `timeout` for the child to end; one that overruns is killed (SIGKILL) and reaped,
    /// and the answer is nil.
    public func wait(timeout: Duration) -> ProcessLauncher.Termination? {
        let deadline = ContinuousClock.now + timeout
        while !hasExited {
            guard ContinuousClock.now < deadline else {
                stop(signal: .kill)
                return nil
            }
            ThisProcess.sleep(microseconds: 5_000)
        }
        return termination
    }

    /// Whether the child has ended (reaping it then), without blocking.
    public var hasExited: Bool {
        if termination == nil, let reaped = ProcessLauncher.reap(pid) { termination = reaped.termination }
        return termination != nil
    }

    /// Sends `signal` unless the child was already reaped, then waits for it.
    @discardableResult
    public func stop(signal: ProcessSignal = .terminate) -> Int32 {
        self.signal(signal)
        return wait()
    }

    deinit {
        if termination == nil { stop(signal: .kill) }
    }

    /// Whether `descriptor` became readable (or reached end of file) before `deadline`.
    /// The corresponding C function is `poll`.
    private static func waitReadable(_ descriptor: borrowing OwnedDescriptor, until deadline: ContinuousClock.Instant)
        -> Bool
    {
        while true {
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else { return false }
            let (seconds, attoseconds) = remaining.components
            let milliseconds = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1)
            var request = pollfd(fd: descriptor.rawValue, events: Int16(POLLIN), revents: 0)
            if poll(&request, 1, milliseconds) > 0 { return true }
        }
    }

    /// What one `read` returns: empty at end of file, and on an error (nothing more can come then).
    private static func read(_ descriptor: borrowing OwnedDescriptor) -> [UInt8] {
        var chunk = [UInt8](repeating: 0, count: 4096)
        let count = (try? valueOrErrno {
            chunk.withUnsafeMutableBytes { Glibc.read(descriptor.rawValue, $0.baseAddress, $0.count) }
        }) ?? 0
        return Array(chunk[..<count])
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
