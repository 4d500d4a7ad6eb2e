@preconcurrency import Glibc
import SystemPackage

extension Pipe {
    /// A pipe whose ends are close-on-exec from the moment they exist (`pipe2(O_CLOEXEC)`). Set in
    /// a second step, a child spawned in between would inherit both ends, and a child holding another
    /// child's write end keeps that output open after its writer exits.
    static func closeOnExec() throws(Errno) -> Pipe {
        let ends = try FileDescriptor.pipe(options: .closeOnExec)
        return Pipe(readEnd: OwnedDescriptor(adopting: ends.readEnd.rawValue),
                    writeEnd: OwnedDescriptor(adopting: ends.writeEnd.rawValue))
    }
}

/// The reading end of a pipe carrying a child's standard output or error to this process. A class,
/// so that a launcher can keep many in an array; the descriptor closes with the last reference.
public final class OutputPipe {
    /// For registering with `EventPoll`; it must not be used after this object goes.
    public let descriptor: OwnedDescriptor

    init(_ descriptor: consuming OwnedDescriptor) { self.descriptor = descriptor }

    /// What the child wrote, up to `limit` bytes; empty once the child has closed its end and
    /// everything was read. Blocks while the pipe is empty, so call it when `EventPoll` says readable.
    /// The corresponding C function is `read`.
    public func read(limit: Int = 65536) throws(Errno) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: limit)
        let count = try valueOrErrno {
            bytes.withUnsafeMutableBytes { Glibc.read(descriptor.rawValue, $0.baseAddress, $0.count) }
        }
        bytes.removeSubrange(count...)
        return bytes
    }
}

extension ProcessLauncher {
    /// A child whose standard output and error come back to this process through pipes.
    public struct ChildWithOutput {
        public let pid: pid_t
        public let standardOutput: OutputPipe
        public let standardError: OutputPipe
    }

    /// Starts a child like `spawn`, with its standard output and error going to pipes this process
    /// reads. Only the child holds the write ends, so each pipe reaches end of file when the child
    /// (and any process it passed them on to) has exited.
    public static func spawnCapturingOutput(path: String, arguments: [String], environment: [String],
                                            cpu: Int? = nil) throws(Errno) -> ChildWithOutput {
        let output = try Pipe.closeOnExec()
        let errors = try Pipe.closeOnExec()
        // posix_spawn's dup2 gives the child its copies as fds 1 and 2 without close-on-exec.
        let pid = try spawn(path: path, arguments: arguments, environment: environment,
                            standardOutput: output.writeEnd.fileDescriptor, standardError: errors.writeEnd.fileDescriptor,
                            cpu: cpu)
        return ChildWithOutput(pid: pid, standardOutput: OutputPipe(output.takeReadEnd()),
                               standardError: OutputPipe(errors.takeReadEnd()))
    }
}
