import Synchronization
@_exported import XPMEMWire
import XPMEMSystem

/// A connection to the `xpmemd` broker: the starting point for exporting and importing memory.
///
/// ```swift
/// let broker = try XPMEMBroker.connect()
/// let segment = try broker.makeSegment(size: 1 << 20, permit: Permit(rawValue: 0o600))
/// // another process:
/// let grant = try broker.get(segmentID, access: .readWrite)
/// let attachment = try grant.attach()
/// ```
///
/// Every object made through a connection keeps it open. All methods may be called from any thread;
/// requests on one connection take turns.
public final class XPMEMBroker: Sendable {
    let channel: BrokerChannel
    /// The broker-assigned number of this connection.
    public let clientID: ClientID
    /// The broker's process id.
    public let brokerPID: Int32
    /// The socket this connection went to.
    public var socketPath: String { channel.path }
    /// The event channel, opened with the first attachment.
    private let events = Mutex<EventSubscription?>(nil)

    private init(channel: BrokerChannel, clientID: ClientID, brokerPID: Int32) {
        self.channel = channel
        self.clientID = clientID
        self.brokerPID = brokerPID
    }

    /// Connects and says hello.
    /// - Parameters:
    ///   - socketPath: the broker's socket; nil means `$XPMEM_SOCKET`, else the per-user default.
    ///   - name: how this client appears in `xpmemctl clients`.
    /// - Throws: `brokerUnavailable` when nothing listens there, `protocolMismatch` for another version.
    public static func connect(socketPath: String? = nil, name: String? = nil) throws(XPMEMError) -> XPMEMBroker {
        let channel = try BrokerChannel(path: BrokerSocketPath.resolve(explicit: socketPath))
        let reply = try channel.request(.hello(clientName: name ?? defaultClientName()))
        guard case .welcome(let id, let pid) = reply.message else {
            throw BrokerChannel.unexpected(reply.message, for: .hello(clientName: ""))
        }
        return XPMEMBroker(channel: channel, clientID: id, brokerPID: pid)
    }

    /// The event channel, opening it on first use.
    func subscription() throws(XPMEMError) -> EventSubscription {
        let result: Result<EventSubscription, XPMEMError> = events.withLock { current in
            if let current { return .success(current) }
            return Result { () throws(XPMEMError) -> EventSubscription in
                let subscription = try EventSubscription(channel: channel)
                current = subscription
                return subscription
            }
        }
        return try result.get()
    }

    /// The attachments of this connection, if any were ever made.
    var attachmentTable: AttachmentTable? { events.withLock { $0?.table } }

    /// Closes the connection now. The broker then removes this client's segments and frees its grants
    /// and attachments, as it does when the process exits; mappings already made stay readable.
    public func close() { channel.close() }

    deinit { channel.close() }

    private static func defaultClientName() -> String {
        guard let name = try? AddressSpace.commandName() else { return "pid \(ThisProcess.processID)" }
        return name
    }
}
