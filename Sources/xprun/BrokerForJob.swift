@preconcurrency import Glibc
import XPMEM
import XPMEMSystem

/// The broker a job uses: one already answering at the requested socket, or a private `xpmemd`
/// (from xprun's own directory) on a temporary socket, stopped when the job ends.
final class BrokerForJob {
    let socketPath: String
    private var privatePID: pid_t?
    private var privateDirectory: String?

    init(requested: String?) throws {
        let path = BrokerSocketPath.resolve(explicit: requested)
        if (try? XPMEMBroker.connect(socketPath: path, name: "xprun probe")) != nil {
            socketPath = path
            return
        }
        let daemon = "\(FileSystem.executableDirectory())/xpmemd"
        guard FileSystem.isExecutable(daemon) else {
            throw Failure("xprun: no broker answers at \(path) and there is no xpmemd beside xprun to start one")
        }
        let directory: String
        do {
            directory = try FileSystem.makeTemporaryDirectory("/tmp/xprun-broker-XXXXXX")
        } catch {
            throw Failure("xprun: cannot create a directory for a private broker: \(error)")
        }
        privateDirectory = directory
        socketPath = "\(directory)/xpmemd.sock"
        privatePID = try ProcessLauncher.spawn(
            path: daemon, arguments: [daemon, "--socket", socketPath, "--log-level", "warning"],
            environment: ProcessLauncher.currentEnvironment())
        for _ in 0..<1000 {
            if (try? XPMEMBroker.connect(socketPath: socketPath, name: "xprun probe")) != nil { return }
            usleep(10_000)
        }
        stop()
        throw Failure("xprun: the private xpmemd did not start at \(socketPath)")
    }

    /// Stops the private broker (SIGTERM, then SIGKILL after 5 s) and removes its directory.
    func stop() {
        if let pid = privatePID {
            privatePID = nil
            kill(pid, SIGTERM)
            var waited = 0
            while ProcessLauncher.reap(pid) == nil {
                if waited == 500 { kill(pid, SIGKILL) }
                usleep(10_000)
                waited += 1
            }
        }
        if let directory = privateDirectory {
            privateDirectory = nil
            FileSystem.removeFlatDirectory(directory)
        }
    }

    deinit { stop() }
}
