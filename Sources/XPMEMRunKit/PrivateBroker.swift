import XPMEM
import XPMEMSystem

/// An `xpmemd` of this run's own (the one built beside the running program) on a socket in a fresh
/// temporary directory: started, polled until it serves, killed or stopped, started again on the
/// same socket; its directory goes with it. What launchers, benchmarks, checks and tests share.
public final class PrivateBroker {
    public let directory: String
    public let socketPath: String
    private let arguments: [String]
    private var daemon: PipedChild?

    /// - Parameters:
    ///   - user: names the temporary directory and the readiness probe ("xprun", "xpmem-test").
    ///   - openToEveryUID: the socket (`--mode 0666`) and its directory usable by every uid, for
    ///     processes that run as another user.
    ///   - arguments: more options for `xpmemd` (its log level, quotas...).
    public init(for user: String, openToEveryUID: Bool = false, arguments: [String] = ["--log-level", "warning"])
        throws(XPMEMError)
    {
        let program = Self.program
        guard FileSystem.isExecutable(program) else {
            throw XPMEMError(.brokerUnavailable, "there is no xpmemd beside \(user) (\(program)) to start a private one")
        }
        do {
            directory = try FileSystem.makeTemporaryDirectory("/tmp/\(user)-broker-XXXXXX")
            if openToEveryUID { try FileSystem.setMode(directory, 0o755) }
        } catch {
            throw XPMEMError.system("creating a directory for a private broker", error)
        }
        socketPath = directory + "/xpmemd.sock"
        // It goes when this process goes, however that happens (a launcher killed by SIGKILL, or by
        // SIGPIPE in `xprun … | head`), instead of serving a socket nobody will use again, and takes
        // the directory with it, which this process can no longer remove.
        self.arguments = ["--socket", socketPath, "--exit-with", "\(ThisProcess.processID)", "--private-directory"]
            + (openToEveryUID ? ["--mode", "0666"] : []) + arguments
        do {
            try start()
        } catch {
            FileSystem.removeFlatDirectory(directory)
            throw error
        }
    }

    static var program: String { FileSystem.executableDirectory() + "/xpmemd" }

    /// The broker's process id (0 once it is gone).
    public var pid: Int32 { daemon?.pid ?? 0 }

    /// Whether the broker process still runs.
    public var isRunning: Bool { daemon.map { !$0.hasExited } ?? false }

    /// Starts a broker with the same options on the same socket (after `kill`) and waits until it serves.
    public func start() throws(XPMEMError) {
        do {
            daemon = try PipedChild(path: Self.program, arguments)
        } catch {
            throw XPMEMError.system("starting \(Self.program)", error)
        }
        for _ in 0..<1000 {
            if (try? XPMEMBroker.connect(socketPath: socketPath, name: "readiness probe", reconnect: .disabled)) != nil {
                return
            }
            if daemon?.hasExited == true { break }
            ThisProcess.sleep(microseconds: 10_000)
        }
        daemon?.stop(signal: .kill)
        daemon = nil
        throw XPMEMError(.brokerUnavailable, "the private xpmemd did not start serving at \(socketPath)")
    }

    /// Sends `signal` (SIGKILL: it cleans nothing up, its socket and lock files stay) and waits until
    /// the broker is gone; returns its exit status, shell style.
    @discardableResult
    public func kill(signal: ProcessSignal = .kill) -> Int32? {
        defer { daemon = nil }
        return daemon?.stop(signal: signal)
    }

    /// Stops the broker (SIGTERM) and returns its exit status; the directory stays until this goes.
    @discardableResult
    public func stop() -> Int32? { kill(signal: .terminate) }

    deinit {
        kill(signal: .terminate)
        FileSystem.removeFlatDirectory(directory)
    }
}
