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

/// A child process built beside this program (or any program), with its standard input and output piped.
typealias Helper = PipedChild

extension PipedChild {
    static func sibling(_ name: String) -> String { FileSystem.executableDirectory() + "/" + name }

    func terminate() { stop() }
}
