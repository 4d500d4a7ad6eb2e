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
/// requests on one connection take turns. If the broker goes away, the connection reconnects in the
/// background as its `ReconnectPolicy` says, restoring its segments (same ids), grants and attachments.
public final class XPMEMBroker: Sendable {
    let channel: BrokerChannel
    /// Set as `close()` begins: no free-page hint is taken from then on (`ExportedSegment.hintFree`).
    private let closing = Atomic<Bool>(false)
    var isClosing: Bool { closing.load(ordering: .sequentiallyConsistent) }
    /// How this connection comes back after the broker goes away.
    public let reconnectPolicy: ReconnectPolicy
    /// The attachments of this connection, for the event listener (of whichever generation).
    let eventTable = AttachmentTable()
    let events = Mutex<Events>(Events())
    let peer: Mutex<(clientID: ClientID, brokerPID: Int32)>
    /// What a reconnection restores, held weakly: objects the application dropped are not restored.
    let tracked = Mutex<Tracked>(Tracked())
    let reconnection = Mutex<ReconnectionState>(ReconnectionState())

    struct Events {
        /// The userfaultfd behind `.block`, opened with the first attachment (nil inside: the kernel
        /// refused it, and every attachment is `.revoke`). It outlives reconnections.
        var gate: UserFaultGate?? = nil
        /// The event channel of the current (or last) generation.
        var subscription: EventSubscription?
    }

    /// The broker-assigned number of this connection (a new one after each reconnection).
    public var clientID: ClientID { peer.withLock { $0.clientID } }
    /// The broker's process id (the new broker's after a reconnection).
    public var brokerPID: Int32 { peer.withLock { $0.brokerPID } }
    /// The socket this connection went to.
    public var socketPath: String { channel.path }
    /// Whether the broker is reachable as far as this connection knows (false while reconnecting).
    public var isConnected: Bool { channel.isConnected }

    private init(channel: BrokerChannel, clientID: ClientID, brokerPID: Int32, policy: ReconnectPolicy) {
        self.channel = channel
        self.reconnectPolicy = policy
        peer = Mutex((clientID, brokerPID))
        channel.setLossHandler { [weak self] generation, reason in
            self?.connectionLost(generation: generation, reason: reason)
        }
    }

    /// Connects and says hello.
    /// - Parameters:
    ///   - socketPath: the broker's socket; nil means `$XPMEM_SOCKET`, else the per-user default.
    ///   - name: how this client appears in `xpmemctl clients`.
    ///   - reconnect: what to do when the broker goes away; by default `XPMEM_RECONNECT_SECONDS`
    ///     decides (reconnect for a minute unless it says otherwise).
    /// - Throws: `brokerUnavailable` when nothing listens there, `protocolMismatch` for another version.
    public static func connect(socketPath: String? = nil, name: String? = nil,
                               reconnect: ReconnectPolicy = .fromEnvironment) throws(XPMEMError) -> XPMEMBroker {
        let path = BrokerSocketPath.resolve(explicit: socketPath)
        let clientName = name ?? defaultClientName()
        let channel = try BrokerChannel(path: path)
        let (id, pid) = try hello(on: channel, name: clientName)
        let broker = XPMEMBroker(channel: channel, clientID: id, brokerPID: pid, policy: reconnect)
        broker.reconnection.withLock { $0.clientName = clientName }
        return broker
    }

    static func hello(on channel: BrokerChannel, name: String) throws(XPMEMError) -> (ClientID, Int32) {
        let reply = try channel.request(.hello(clientName: name))
        guard case .welcome(let id, let pid) = reply.message else {
            throw BrokerChannel.unexpected(reply.message, for: .hello(clientName: ""))
        }
        return (id, pid)
    }

    /// The event channel of connection generation `generation`, opening it on first use.
    func subscription(generation: UInt64? = nil) throws(XPMEMError) -> EventSubscription {
        let generation = generation ?? channel.generation
        let result: Result<EventSubscription, XPMEMError> = events.withLock { events in
            if let current = events.subscription, current.generation == generation { return .success(current) }
            return Result { () throws(XPMEMError) -> EventSubscription in
                let subscription = try openSubscription(on: channel, generation: generation, installed: true)
                events.subscription = subscription
                return subscription
            }
        }
        return try result.get()
    }

    /// The connection's userfaultfd, opened on first use; nil where the kernel refuses it.
    func userFaultGate() -> UserFaultGate? {
        events.withLock { events in
            if events.gate == nil { events.gate = .some(try? UserFaultGate(UserFaultDescriptor())) }
            return events.gate ?? nil
        }
    }

    /// A new event channel on `channel`, sharing this connection's attachment table.
    func openSubscription(on channel: BrokerChannel, generation: UInt64, installed: Bool)
        throws(XPMEMError) -> EventSubscription
    {
        try EventSubscription(
            channel: channel, generation: generation, bound: installed ? generation : nil, table: eventTable,
            ended: { [weak self] in
                self?.connectionLost(generation: generation, reason: "the broker closed the event channel")
            })
    }

    /// Closes the connection now, for good (no reconnection). The broker then removes this client's
    /// segments and frees its grants and attachments, as it does when the process exits; mappings
    /// already made stay readable.
    public func close() {
        // Free-page hints go first, while the broker still hears this process: a write to a hinted
        // page must reach it before the page may be dropped, and after the close none could. A hint
        // another thread is making meanwhile either has its tracker stopped here or sees `closing`
        // after it and ends it itself.
        closing.store(true, ordering: .sequentiallyConsistent)
        for segment in tracked.withLock({ $0.live().segments }) { segment.stopFreePageTracking() }
        channel.close()
    }

    deinit { channel.close() }

    private static func defaultClientName() -> String {
        guard let name = try? AddressSpace.commandName() else { return "pid \(ThisProcess.processID)" }
        return name
    }
}
