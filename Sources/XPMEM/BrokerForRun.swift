import XPMEMSystem

/// The broker a launcher or benchmark uses: one already answering at the requested socket, or a
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
    public init(requested: String?, for user: String) throws(XPMEMError) {
        let path = BrokerSocketPath.resolve(explicit: requested)
        if (try? XPMEMBroker.connect(socketPath: path, name: "\(user) probe")) != nil {
            socketPath = path
            return
        }
        let program = FileSystem.executableDirectory() + "/xpmemd"
        guard FileSystem.isExecutable(program) else {
            throw XPMEMError(.brokerUnavailable,
                "no broker answers at \(path) and there is no xpmemd beside \(user) to start a private one")
        }
        let directory: String
        do {
            directory = try FileSystem.makeTemporaryDirectory("/tmp/\(user)-broker-XXXXXX")
        } catch {
            throw XPMEMError.system("creating a directory for a private broker", error)
        }
        self.directory = directory
        socketPath = directory + "/xpmemd.sock"
        do {
            daemon = try PipedChild(path: program, ["--socket", socketPath, "--log-level", "warning"])
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
