import XPMEM
import XPMEMSystem

/// The broker a launcher, benchmark or check uses: one already answering at the requested socket, or a
/// private `xpmemd` (the one built beside the running program) on a socket in a fresh temporary
/// directory, stopped — and its directory removed — by `stop()` or when this object goes.
public final class BrokerForRun {
    /// Where clients connect: the requested socket, or the private broker's.
    public let socketPath: String
    /// Whether this object started the broker (and so will stop it).
    public var isPrivate: Bool { daemon != nil }
    private var daemon: PipedChild?
    private var directory: String?

    /// - Parameters:
    ///   - requested: `--socket`, else `$XPMEM_SOCKET`, else the per-user default.
    ///   - user: names the programs in messages and the temporary directory ("xprun", "xpmem-bench").
    public convenience init(requested: String?, for user: String) throws(XPMEMError) {
        let path = BrokerSocketPath.resolve(explicit: requested)
        if (try? XPMEMBroker.connect(socketPath: path, name: "\(user) probe")) != nil {
            self.init(borrowing: path)
        } else {
            try self.init(privateFor: user, notFoundAt: path)
        }
    }

    private init(borrowing path: String) { socketPath = path }

    /// Always starts a private broker.
    /// - Parameter openToEveryUID: the socket and its directory usable by every uid (`--mode 0666`), for
    ///   checks whose processes run as another user.
    public init(privateFor user: String, openToEveryUID: Bool = false, notFoundAt requested: String? = nil)
        throws(XPMEMError)
    {
        let program = FileSystem.executableDirectory() + "/xpmemd"
        guard FileSystem.isExecutable(program) else {
            let why = requested.map { "no broker answers at \($0) and " } ?? ""
            throw XPMEMError(.brokerUnavailable, "\(why)there is no xpmemd beside \(user) to start a private one")
        }
        let directory: String
        do {
            directory = try FileSystem.makeTemporaryDirectory("/tmp/\(user)-broker-XXXXXX")
            if openToEveryUID { try FileSystem.setMode(directory, 0o755) }
        } catch {
            throw XPMEMError.system("creating a directory for a private broker", error)
        }
        self.directory = directory
        socketPath = directory + "/xpmemd.sock"
        let access = openToEveryUID ? ["--mode", "0666"] : []
        do {
            daemon = try PipedChild(path: program, ["--socket", socketPath, "--log-level", "warning"] + access)
        } catch {
            FileSystem.removeFlatDirectory(directory)
            throw XPMEMError.system("starting \(program)", error)
        }
        for _ in 0..<1000 {
            if (try? XPMEMBroker.connect(socketPath: socketPath, name: "\(user) probe")) != nil { return }
            ThisProcess.sleep(microseconds: 10_000)
        }
        stop()
        throw XPMEMError(.brokerUnavailable, "the private xpmemd did not start at \(socketPath)")
    }

    /// Stops a private broker (SIGTERM) and removes its directory; nothing for a borrowed one.
    public func stop() {
        daemon?.stop()
        daemon = nil
        if let directory {
            self.directory = nil
            FileSystem.removeFlatDirectory(directory)
        }
    }

    deinit { stop() }
}
