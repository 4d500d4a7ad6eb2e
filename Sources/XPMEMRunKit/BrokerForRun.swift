import XPMEM
import XPMEMSystem

/// The broker a launcher, benchmark or check uses: one already answering at the requested socket, or a
/// `PrivateBroker` (the `xpmemd` built beside the running program on a socket in a fresh temporary
/// directory), stopped — and its directory removed — by `stop()` or when this object goes.
public final class BrokerForRun {
    /// Where clients connect: the requested socket, or the private broker's.
    public let socketPath: String
    /// Whether this object started the broker (and so will stop it).
    public var isPrivate: Bool { started != nil }
    private var started: PrivateBroker?

    /// - Parameters:
    ///   - requested: `--socket`, else `$XPMEM_SOCKET`, else the per-user default.
    ///   - user: names the programs in messages and the temporary directory ("xprun", "xpmem-bench").
    public init(requested: String?, for user: String) throws(XPMEMError) {
        let path = BrokerSocketPath.resolve(explicit: requested)
        if (try? XPMEMBroker.connect(socketPath: path, name: "\(user) probe", reconnect: .disabled)) != nil {
            socketPath = path
            return
        }
        do {
            let broker = try PrivateBroker(for: user)
            started = broker
            socketPath = broker.socketPath
        } catch {
            throw XPMEMError(.brokerUnavailable, "no broker answers at \(path), and starting one failed: \(error.message)")
        }
    }

    /// Always a private broker.
    /// - Parameter openToEveryUID: the socket and its directory usable by every uid (`--mode 0666`), for
    ///   checks whose processes run as another user.
    public init(privateFor user: String, openToEveryUID: Bool = false) throws(XPMEMError) {
        let broker = try PrivateBroker(for: user, openToEveryUID: openToEveryUID)
        started = broker
        socketPath = broker.socketPath
    }

    /// Stops a private broker (SIGTERM) and removes its directory; nothing for a borrowed one.
    public func stop() { started = nil }
}
