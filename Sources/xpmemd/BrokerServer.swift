@preconcurrency import Glibc
import Logging
import SystemPackage
import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

/// The broker's event loop: one thread, one epoll set, non-blocking sockets. It reads requests,
/// asks the `Registry` and the `InvalidationCoordinator` what to do, and applies their answers to
/// descriptors and sockets. No client can block it: sends never wait (a full socket buffer queues the
/// frame), a client that stops reading is dropped once its queue is full, and invalidations wait for
/// acknowledgements as state, never in a call.
final class BrokerServer {
    /// Frames a channel may leave unread before the client stops being read from, and before it is dropped.
    static let outboundPauseThreshold = 64
    static let outboundDropThreshold = 1024
    /// Frames read from one client per wake-up, so that one busy client cannot starve the others.
    static let framesPerWakeUp = 32

    static let listenerToken: UInt64 = 0
    static let signalToken: UInt64 = 1

    let socketPath: String
    let logger: Logger
    let poll: EventPoll
    private let listener: OwnedDescriptor
    private let signals: OwnedDescriptor
    var registry: Registry
    var coordinator = InvalidationCoordinator()
    var connections: [UInt64: ClientConnection] = [:]
    var connectionOfClient: [ClientID: UInt64] = [:]
    var segmentFiles: [SegmentID: SegmentFiles] = [:]
    /// Attach requests waiting for an invalidation of their range to end.
    var deferredAttaches: [DeferredAttach] = []
    private var nextConnection: UInt64 = 1
    let receiveBuffer: UnsafeMutableRawBufferPointer
    let startTime = ContinuousClock.now
    let spinPolicy: SpinPolicy
    private var running = true

    /// Binds the socket at `socketPath` (refusing if another broker answers there) with `mode` and
    /// optionally `group`.
    init(socketPath: String, mode: mode_t, group: gid_t?, spinPolicy: SpinPolicy, logger: Logger) throws {
        self.socketPath = socketPath
        self.spinPolicy = spinPolicy
        self.logger = logger
        if FileSystem.isSocket(socketPath) {
            if (try? UnixSocket.connect(to: socketPath)) != nil {
                throw BrokerStartError("a broker is already listening at \(socketPath)")
            }
            try FileSystem.unlinkIfPresent(socketPath)
        }
        // Bind under a restrictive umask so no other user can connect before the mode is set.
        let previousMask = umask(0o177)
        defer { umask(previousMask) }
        listener = try UnixSocket.listen(at: socketPath)
        try FileSystem.setMode(socketPath, mode)
        if let group { try FileSystem.setGroup(socketPath, group) }
        signals = try ProcessHandle.signalDescriptor(for: [SIGTERM, SIGINT])
        signal(SIGPIPE, SIG_IGN)
        poll = try EventPoll()
        try poll.add(listener.rawValue, events: .readable, token: Self.listenerToken)
        try poll.add(signals.rawValue, events: .readable, token: Self.signalToken)
        registry = Registry(randomSource: {
            // getrandom on a machine with an initialised pool does not fail; if it did, ids would
            // become guessable, which is worse than stopping.
            do { return try ProcessHandle.randomUInt64() } catch { fatalError("getrandom failed: \(error)") }
        })
        receiveBuffer = .allocate(byteCount: WireProtocol.maximumRequestSize, alignment: 16)
    }

    deinit { receiveBuffer.deallocate() }

    /// Microseconds since the broker started, on the monotonic clock.
    var now: UInt64 {
        let elapsed = ContinuousClock.now - startTime
        return UInt64(elapsed.components.seconds) * 1_000_000 + UInt64(elapsed.components.attoseconds / 1_000_000_000_000)
    }

    /// Serves until SIGTERM or SIGINT, then removes the socket file.
    func run() throws {
        logger.info("xpmemd listening", metadata: ["socket": "\(socketPath)", "pid": "\(getpid())"])
        while running {
            for event in try nextEvents() {
                handle(event)
            }
            apply(coordinator.expire(now: now))
        }
        logger.info("xpmemd stopping", metadata: ["clients": "\(connections.count)", "segments": "\(segmentFiles.count)"])
        for number in Array(connections.keys) { drop(number, reason: "broker stopping") }
        try? FileSystem.unlinkIfPresent(socketPath)
    }

    /// Ready descriptors: polled for a short while first (a client that just got a reply often sends its
    /// next request within microseconds), then waited for in the kernel.
    private func nextEvents() throws -> [PollEvent] {
        let ready = try poll.wait(timeoutMilliseconds: 0)
        if !ready.isEmpty { return ready }
        if let polled = spinPolicy.spin({ () -> [PollEvent]? in
            let events = (try? poll.wait(timeoutMilliseconds: 0)) ?? []
            return events.isEmpty ? nil : events
        }) {
            return polled
        }
        return try poll.wait(timeoutMilliseconds: waitTimeout())
    }

    /// How long epoll may sleep: until the next invalidation deadline, or forever.
    private func waitTimeout() -> Int32 {
        guard let deadline = coordinator.nextDeadline else { return -1 }
        let current = now
        guard deadline > current else { return 0 }
        return Int32(clamping: (deadline - current + 999) / 1000)
    }

    private func handle(_ event: PollEvent) {
        switch event.token {
        case Self.listenerToken:
            acceptPending()
        case Self.signalToken:
            while let signal = try? ProcessHandle.nextSignal(on: signals) {
                logger.notice("received signal \(signal)")
                running = false
            }
        default:
            let number = event.token >> 2
            guard let connection = connections[number] else { return }
            switch event.token & 3 {
            case ClientConnection.processHandleKind:
                drop(number, reason: "process \(connection.credentials.pid) exited")
            case Channel.Kind.events.rawValue:
                guard let channel = connection.events else { return }
                serve(channel, of: connection, events: event.events)
            default:
                serve(connection.main, of: connection, events: event.events)
            }
        }
    }

    private func serve(_ channel: Channel, of connection: ClientConnection, events: PollEvents) {
        if events.contains(.writable) { flush(channel, of: connection) }
        guard connections[connection.number] != nil else { return }
        if events.contains(.readable) {
            readFrames(from: channel, of: connection)
        } else if !events.isDisjoint(with: [.hangUp, .error]) {
            drop(connection.number, reason: "connection closed")
        }
    }

    private func acceptPending() {
        while true {
            let accepted: OwnedDescriptor?
            do {
                accepted = try UnixSocket.accept(on: listener)
            } catch {
                // EMFILE and friends: leave the connection pending; a later wake-up retries.
                logger.warning("accept failed: \(error)")
                return
            }
            guard let socket = accepted else { return }
            let credentials: PeerCredentials
            do {
                credentials = try PeerCredentials.of(socket)
            } catch {
                logger.warning("dropping a connection without peer credentials: \(error)")
                continue
            }
            let number = nextConnection
            nextConnection += 1
            let connection = ClientConnection(number: number, socket: socket, credentials: credentials)
            do {
                try poll.add(connection.main.socket.rawValue, events: .readable, token: connection.token(for: connection.main))
            } catch {
                logger.warning("cannot watch a new connection: \(error)")
                continue
            }
            connections[number] = connection
            logger.debug("connection \(number) from pid \(credentials.pid) uid \(credentials.uid)")
        }
    }

    /// Forgets a connection and everything its client held; closing its descriptors removes them from
    /// epoll. Importers of its segments are told they are gone; its part in invalidations ends.
    func drop(_ number: UInt64, reason: String) {
        guard let connection = connections.removeValue(forKey: number) else { return }
        deferredAttaches.removeAll { $0.connection == number }
        guard let client = connection.clientID else {
            logger.debug("connection \(number) dropped: \(reason)")
            return
        }
        connectionOfClient[client] = nil
        let holders = registry.segments.keys.filter { registry.segments[$0]?.owner == client }
            .map { ($0, registry.grantHolders(of: $0)) }
        let departure = registry.disconnect(client)
        for segment in departure.removedSegments {
            segmentFiles[segment] = nil
            apply(coordinator.segmentRemoved(segment))
        }
        for (segment, importers) in holders {
            for importer in importers where importer != client {
                notify(importer, .released(segment, reason: .exporterExited))
            }
        }
        apply(coordinator.clientDeparted(client, now: now))
        logger.info("client left", metadata: [
            "client": "\(client.rawValue)", "pid": "\(connection.credentials.pid)", "reason": "\(reason)",
            "segmentsRemoved": "\(departure.removedSegments.count)", "grantsReleased": "\(departure.releasedGrants)",
        ])
    }
}

/// A reason the broker could not start, worded for the operator.
struct BrokerStartError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
