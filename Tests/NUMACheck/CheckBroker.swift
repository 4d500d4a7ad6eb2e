import XPMEM
import XPMEMRunKit
import XPMEMSystem

/// The broker the checks use: a private xpmemd open to every uid (the cooperative checks run as
/// another user), or one already running.
final class CheckBroker {
    let socketPath: String
    private let started: BrokerForRun?

    init() throws {
        let broker = try BrokerForRun(privateFor: "xpmem-numa", openToEveryUID: true)
        started = broker
        socketPath = broker.socketPath
    }

    init(existing socketPath: String) {
        self.socketPath = socketPath
        started = nil
    }

    func connect(_ name: String) throws -> XPMEMBroker { try XPMEMBroker.connect(socketPath: socketPath, name: name) }

    func stop() { started?.stop() }
}

/// A child process built beside this program (or any program), with its standard input and output piped.
typealias Helper = PipedChild

extension PipedChild {
    static func sibling(_ name: String) -> String { FileSystem.executableDirectory() + "/" + name }

    func terminate() { stop() }
}
