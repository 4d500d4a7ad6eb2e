@preconcurrency import Glibc
import ArgumentParser
import Synchronization
import SystemPackage
import XPMEMSystem

extension Probe {
    /// Plays systemd's part for the socket-activation tests: binds a listening socket, starts the
    /// program with it as descriptor 3 (`LISTEN_PID`, `LISTEN_FDS`), and starts it again whenever it
    /// dies (`Restart=always`), printing "started PID" each time; "stop" on standard input ends it.
    struct Supervise: ParsableCommand {
        @Option var socket: String
        @Option(help: "Restarts before giving up.") var restarts = 5
        @Argument(parsing: .captureForPassthrough) var command: [String]

        func run() throws {
            let program = command.first == "--" ? Array(command.dropFirst()) : command
            guard let path = program.first else { throw ValidationError("no program to supervise") }
            let listener = try UnixSocket.listen(at: socket)
            // Blocking, as systemd passes it; the broker makes it non-blocking itself.
            try listener.setNonBlocking(false)
            let stop = Atomic<Bool>(false)
            try DetachedThread.start {
                while let line = readLine() { if line == "stop" { break } }
                stop.store(true, ordering: .relaxed)
            }
            for _ in 0...restarts {
                let pid = fork()
                if pid == 0 {
                    // dup2 clears close-on-exec on its copy; when the socket already is 3, clear it by hand.
                    let number = listener.fileDescriptor.rawValue
                    if number == 3 { _ = fcntl(3, F_SETFD, 0) } else { dup2(number, 3) }
                    setenv("LISTEN_PID", "\(getpid())", 1)
                    setenv("LISTEN_FDS", "1", 1)
                    let arguments = program.map { strdup($0) } + [nil]
                    execv(path, arguments)
                    // An owned descriptor closes after its last use: without this one, the listener would
                    // close (as descriptor 3 it would, just cleared of close-on-exec) before the exec.
                    withExtendedLifetime(listener) {}
                    _exit(127)
                }
                report("started \(pid)")
                var status: CInt = 0
                while waitpid(pid, &status, WNOHANG) == 0 {
                    if stop.load(ordering: .relaxed) {
                        kill(pid, SIGTERM)
                        waitpid(pid, &status, 0)
                        report("stopped")
                        return
                    }
                    usleep(10_000)
                }
                report("exited \(status)")
            }
        }
    }
}
