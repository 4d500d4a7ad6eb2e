@preconcurrency import Glibc
import Logging
import SystemPackage
import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

/// The broker's event loop: one thread, one epoll set, non-blocking sockets. It reads requests,
/// asks the `Registry` what to do, and applies the answer to descriptors and replies. No client can
/// block it: sends never wait (a full socket buffer queues the reply), and a client that stops reading
/// is dropped once its queue is full.
final class BrokerServer {
    /// Frames a client may leave unread before it stops being read from, and before it is dropped.
    static let outboundPauseThreshold = 64
    static let outboundDropThreshold = 1024
    /// Frames read from one client per wake-up, so that one busy client cannot starve the others.
    static let framesPerWakeUp = 32

    private static let listenerToken: UInt64 = 0
    private static let signalToken: UInt64 = 1

    let socketPath: String
    let logger: Logger
    private let poll: EventPoll
    private let listener: OwnedDescriptor
    private let signals: OwnedDescriptor
    private var registry: Registry
    private var connections: [UInt64: ClientConnection] = [:]
    private var segmentFiles: [SegmentID: SegmentFiles] = [:]
    private var nextConnection: UInt64 = 1
    private let receiveBuffer: UnsafeMutableRawBufferPointer
    private let startTime = ContinuousClock.now
    private var running = true

    /// Binds the socket at `socketPath` (refusing if another broker answers there) with `mode` and
    /// optionally `group`.
    init(socketPath: String, mode: mode_t, group: gid_t?, logger: Logger) throws {
        self.socketPath = socketPath
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

    /// Serves until SIGTERM or SIGINT, then removes the socket file.
    func run() throws {
        logger.info("xpmemd listening", metadata: ["socket": "\(socketPath)", "pid": "\(getpid())"])
        while running {
            for event in try poll.wait(timeoutMilliseconds: -1) {
                handle(event)
            }
        }
        logger.info("xpmemd stopping", metadata: ["clients": "\(connections.count)", "segments": "\(segmentFiles.count)"])
        for number in Array(connections.keys) { drop(number, reason: "broker stopping") }
        try? FileSystem.unlinkIfPresent(socketPath)
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
            let number = event.token >> 1
            guard let connection = connections[number] else { return }
            if event.token & 1 == 1 {
                drop(number, reason: "process \(connection.credentials.pid) exited")
                return
            }
            if event.events.contains(.writable) { flush(connection) }
            if event.events.contains(.readable) {
                readRequests(from: connection)
            } else if !event.events.isDisjoint(with: [.hangUp, .error]) {
                drop(number, reason: "connection closed")
            }
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
                try poll.add(connection.socket.rawValue, events: .readable, token: number << 1)
            } catch {
                logger.warning("cannot watch a new connection: \(error)")
                continue
            }
            connections[number] = connection
            logger.debug("connection \(number) from pid \(credentials.pid) uid \(credentials.uid)")
        }
    }

    // MARK: Reading

    private func readRequests(from connection: ClientConnection) {
        for _ in 0..<Self.framesPerWakeUp {
            guard connections[connection.number] != nil, connection.state != .closing,
                  connection.outbound.count < Self.outboundPauseThreshold
            else { return }
            let received: ReceivedMessage
            do {
                received = try UnixSocket.receive(
                    connection.socket.rawValue, into: receiveBuffer, maximumDescriptors: 4, flags: CInt(MSG_DONTWAIT))
            } catch {
                switch error {
                case .wouldBlock: return
                case .messageTooLong:
                    reply(to: connection, requestID: 0, .failure(.malformedFrame, "too many descriptors in one frame"))
                    continue
                default:
                    drop(connection.number, reason: "receive failed: \(error)")
                    return
                }
            }
            if received.isEndOfFile {
                drop(connection.number, reason: "connection closed")
                return
            }
            handleFrame(UnsafeRawBufferPointer(rebasing: receiveBuffer[..<received.byteCount]),
                        truncated: received.truncated, descriptors: received.descriptors, from: connection)
        }
    }

    /// Checks one untrusted frame and dispatches it; every failure is answered, none is fatal.
    private func handleFrame(
        _ bytes: UnsafeRawBufferPointer, truncated: Bool, descriptors: OwnedDescriptorList, from connection: ClientConnection
    ) {
        if truncated {
            reply(to: connection, requestID: 0,
                  .failure(.malformedFrame, "frame longer than the \(WireProtocol.maximumRequestSize)-byte limit"))
            return
        }
        let header: FrameHeader
        do {
            header = try FrameHeader.decode(bytes)
        } catch {
            if case .badMagic = error {
                drop(connection.number, reason: "not speaking the xpmem protocol")
                return
            }
            reply(to: connection, requestID: 0, .failure(.malformedFrame, "bad frame header: \(error)"))
            return
        }
        guard header.version == WireProtocol.version else {
            reply(to: connection, requestID: header.requestID, .failure(.protocolMismatch,
                "this broker speaks protocol version \(WireProtocol.version) and the client version \(header.version): use a client library and xpmemd from the same release"))
            connection.state = .closing
            if connection.outbound.isEmpty { drop(connection.number, reason: "protocol version \(header.version)") }
            return
        }
        let frame: Frame
        do {
            frame = try Frame.decode(bytes)
        } catch {
            reply(to: connection, requestID: header.requestID, .failure(.malformedFrame, "cannot decode: \(error)"))
            return
        }
        guard frame.message.isRequest else {
            reply(to: connection, requestID: frame.requestID, .failure(.malformedFrame, "\(frame.message.type) is not a request"))
            return
        }
        guard descriptors.count == frame.message.descriptorCount else {
            reply(to: connection, requestID: frame.requestID, .failure(.malformedFrame,
                "\(frame.message.type) carries \(frame.message.descriptorCount) descriptors, this frame \(descriptors.count)"))
            return
        }
        let outcome = respond(to: frame.message, descriptors: descriptors, from: connection)
        reply(to: connection, requestID: frame.requestID, outcome.message, descriptors: outcome.descriptors)
    }

    // MARK: Requests

    private struct Outcome {
        var message: Message
        var descriptors: [CInt] = []
    }

    private func respond(
        to message: Message, descriptors: OwnedDescriptorList, from connection: ClientConnection
    ) -> Outcome {
        do throws(BrokerError) {
            if case .hello(let name) = message { return try hello(name: name, from: connection) }
            guard let client = connection.clientID else { throw BrokerError(.notConnected, "say hello first") }
            switch message {
            case .make(let size, let permit, let name):
                guard let writable = descriptors.takeFirst(), let readable = descriptors.takeFirst() else {
                    throw BrokerError(.malformedFrame, "make needs two descriptors")
                }
                let files = try SegmentFiles.validate(readWrite: writable, readOnly: readable, size: size)
                let id = try registry.make(by: client, size: size, permit: permit, name: name)
                segmentFiles[id] = files
                logger.info("segment made", metadata: ["segid": "\(id)", "size": "\(size)", "mode": "\(permit)",
                                                        "pid": "\(connection.credentials.pid)"])
                return Outcome(message: .made(id))
            case .remove(let id):
                try registry.remove(id, by: client)
                segmentFiles[id] = nil
                logger.info("segment removed", metadata: ["segid": "\(id)"])
                return Outcome(message: .done)
            case .get(let id, let access):
                let grant = try registry.get(id, access: access, by: client)
                let size = registry.segments[id]?.size ?? 0
                return Outcome(message: .granted(grant.handle, size: size, access: access))
            case .release(let handle):
                try registry.release(handle, by: client)
                return Outcome(message: .done)
            case .attach(let handle, let offset, let length):
                let attachment = try registry.attach(handle, offset: offset, length: length, by: client)
                guard let files = segmentFiles[attachment.segment] else {
                    throw BrokerError(.internalError, "segment \(attachment.segment) has no memfd")
                }
                return Outcome(message: .attached(attachment.id), descriptors: [files.descriptor(for: attachment.access)])
            case .detach(let attachment):
                try registry.detach(attachment, by: client)
                return Outcome(message: .done)
            case .listSegments(let after):
                let page = registry.segmentSummaries(after: after, limit: 150)
                return Outcome(message: .segments(page.list, more: page.more))
            case .listClients:
                return Outcome(message: .clients(Array(registry.clientSummaries().prefix(150))))
            case .queryStatus:
                return Outcome(message: .status(status()))
            default:
                throw BrokerError(.malformedFrame, "\(message.type) is not a request")
            }
        } catch {
            logger.debug("refused \(message.type) from pid \(connection.credentials.pid): \(error)")
            return Outcome(message: .failure(error.code, error.message))
        }
    }

    private func hello(name: String, from connection: ClientConnection) throws(BrokerError) -> Outcome {
        guard connection.state == .awaitingHello else {
            throw BrokerError(.invalidArgument, "hello was already said on this connection")
        }
        let peer = connection.credentials
        let id = registry.connect(
            Credentials(pid: peer.pid, uid: peer.uid, gid: peer.gid, supplementaryGroups: peer.groups), name: name)
        connection.state = .active(id)
        // A pidfd tells us the process died even if a child inherited its socket.
        do {
            let handle = try ProcessHandle.open(pid: peer.pid)
            try poll.add(handle.rawValue, events: .readable, token: connection.number << 1 | 1)
            connection.processHandle = .some(handle)
        } catch {
            logger.warning("no pidfd for pid \(peer.pid) (\(error)): only socket EOF will tell when it exits")
        }
        logger.info("client joined", metadata: ["client": "\(id.rawValue)", "name": "\(name)", "pid": "\(peer.pid)",
                                                 "uid": "\(peer.uid)"])
        return Outcome(message: .welcome(id, brokerPID: getpid()))
    }

    private func status() -> BrokerStatus {
        let uptime = ContinuousClock.now - startTime
        let milliseconds = uptime.components.seconds * 1000 + uptime.components.attoseconds / 1_000_000_000_000_000
        return BrokerStatus(
            protocolVersion: WireProtocol.version, pid: getpid(), uptimeMilliseconds: UInt64(max(milliseconds, 0)),
            clients: UInt32(registry.clients.count), segments: UInt32(registry.segments.count),
            grants: UInt32(registry.grants.count), attachments: UInt32(registry.attachments.count),
            openDescriptors: UInt32(max(FileSystem.openDescriptorCount(), 0)), numaNodes: UInt32(NUMA.configuredNodes))
    }

    // MARK: Writing

    /// Sends a reply now, or queues it (with duplicates of its descriptors) if the socket is full.
    private func reply(to connection: ClientConnection, requestID: UInt32, _ message: Message, descriptors: [CInt] = []) {
        let bytes = Frame(requestID: requestID, message: message).encoded()
        if connection.outbound.isEmpty {
            do throws(Errno) {
                try UnixSocket.send(connection.socket.rawValue, bytes: bytes, descriptors: descriptors)
                return
            } catch {
                guard error == .wouldBlock else {
                    drop(connection.number, reason: "send failed: \(error)")
                    return
                }
            }
        }
        var copies: [CInt] = []
        for descriptor in descriptors {
            guard let copy = try? OwnedDescriptor.duplicating(descriptor).relinquish() else {
                drop(connection.number, reason: "cannot queue a descriptor")
                return
            }
            copies.append(copy)
        }
        connection.outbound.append(OutboundFrame(bytes: bytes, descriptors: OwnedDescriptorList(adopting: copies)))
        if connection.outbound.count > Self.outboundDropThreshold {
            drop(connection.number, reason: "not reading its replies")
            return
        }
        updateInterest(connection)
    }

    private func flush(_ connection: ClientConnection) {
        while let frame = connection.outbound.first {
            do throws(Errno) {
                try UnixSocket.send(connection.socket.rawValue, bytes: frame.bytes, descriptors: frame.descriptors.rawValues)
            } catch {
                if error == .wouldBlock { break }
                drop(connection.number, reason: "send failed: \(error)")
                return
            }
            connection.outbound.removeFirst()
        }
        if connection.state == .closing && connection.outbound.isEmpty {
            drop(connection.number, reason: "closed after a fatal protocol error")
            return
        }
        updateInterest(connection)
    }

    private func updateInterest(_ connection: ClientConnection) {
        let wantsWritable = !connection.outbound.isEmpty
        guard wantsWritable != connection.wantsWritable else { return }
        connection.wantsWritable = wantsWritable
        let events: PollEvents = wantsWritable ? [.readable, .writable] : .readable
        try? poll.modify(connection.socket.rawValue, events: events, token: connection.number << 1)
    }

    // MARK: Dropping

    /// Forgets a connection and everything its client held; closing its descriptors removes them from epoll.
    private func drop(_ number: UInt64, reason: String) {
        guard let connection = connections.removeValue(forKey: number) else { return }
        if let client = connection.clientID {
            let departure = registry.disconnect(client)
            for segment in departure.removedSegments { segmentFiles[segment] = nil }
            logger.info("client left", metadata: [
                "client": "\(client.rawValue)", "pid": "\(connection.credentials.pid)", "reason": "\(reason)",
                "segmentsRemoved": "\(departure.removedSegments.count)", "grantsReleased": "\(departure.releasedGrants)",
            ])
        } else {
            logger.debug("connection \(number) dropped: \(reason)")
        }
    }
}

/// A reason the broker could not start, worded for the operator.
struct BrokerStartError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
