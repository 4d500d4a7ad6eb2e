@preconcurrency import Glibc
import Logging
import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

/// A reply and the descriptors (borrowed from the broker's own) that travel with it.
struct Outcome {
    var message: Message
    var descriptors: [CInt] = []
}

extension BrokerServer {
    /// Carries out one request. Returns the reply, or nil when the reply comes later (an invalidation
    /// waiting for acknowledgements, an attach waiting for an invalidation to end).
    func respond(to frame: Frame, descriptors: OwnedDescriptorList, from connection: ClientConnection) -> Outcome? {
        let message = frame.message
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
                let importers = registry.grantHolders(of: id)
                try registry.remove(id, by: client)
                segmentFiles[id] = nil
                apply(coordinator.segmentRemoved(id))
                for importer in importers where importer != client { notify(importer, .released(id, reason: .removed)) }
                logger.info("segment removed", metadata: ["segid": "\(id)", "importersTold": "\(importers.count)"])
                return Outcome(message: .done)
            case .get(let id, let access):
                let grant = try registry.get(id, access: access, by: client)
                let size = registry.segments[id]?.size ?? 0
                return Outcome(message: .granted(grant.handle, size: size, access: access))
            case .release(let handle):
                try registry.release(handle, by: client)
                return Outcome(message: .done)
            case .attach(let handle, let offset, let length):
                let request = DeferredAttach(connection: connection.number, client: client, requestID: frame.requestID,
                                             handle: handle, offset: offset, length: length)
                return try attach(request)
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
            case .subscribe:
                guard let socket = descriptors.takeFirst() else { throw BrokerError(.malformedFrame, "subscribe needs a socket") }
                try subscribe(connection, socket: socket)
                return Outcome(message: .done)
            case .invalidate(let id, let offset, let length, let deadline, let reason, let hold):
                try registry.authorizeInvalidation(of: id, offset: offset, length: length, by: client)
                let arrival = now
                let request = InvalidationRequest(
                    segment: id, offset: offset, length: length, reason: reason, holdForChange: hold, requester: client,
                    requestID: frame.requestID, arrival: arrival, deadline: arrival + UInt64(deadline) * 1000)
                apply(coordinator.submit(request, targets: targets(of: request), now: arrival))
                return nil
            case .endInvalidation(let id, let sequence):
                let effects = try coordinator.end(id, sequence: sequence, by: client)
                // The exporter need not wait while importers are told: answer it first.
                send(.done, requestID: frame.requestID, on: connection.main, of: connection)
                apply(effects)
                return nil
            case .describePlacement(let id, let placement):
                try registry.describePlacement(of: id, as: placement, by: client)
                logger.info("segment placement", metadata: ["segid": "\(id)", "placement": "\(placement)"])
                return Outcome(message: .done)
            default:
                throw BrokerError(.malformedFrame, "\(message.type) is not a request")
            }
        } catch {
            logger.debug("refused \(message.type) from pid \(connection.credentials.pid): \(error)")
            return Outcome(message: .failure(error.code, error.message))
        }
    }

    /// Records an attachment and hands over the segment's descriptor, or defers while an
    /// invalidation of an overlapping range is in flight (like a fault waiting on a migration entry).
    func attach(_ request: DeferredAttach) throws(BrokerError) -> Outcome? {
        guard let grant = registry.grants[request.handle], grant.client == request.client else {
            throw BrokerError(.notFound, "no \(request.handle) on this connection (handles are valid only where they were obtained)")
        }
        if coordinator.blocksAccess(to: grant.segment, offset: request.offset, length: request.length) {
            deferredAttaches.append(request)
            return nil
        }
        let attachment = try registry.attach(request.handle, offset: request.offset, length: request.length,
                                             by: request.client)
        guard let files = segmentFiles[attachment.segment] else {
            throw BrokerError(.internalError, "segment \(attachment.segment) has no memfd")
        }
        return Outcome(message: .attached(attachment.id), descriptors: [files.descriptor(for: attachment.access)])
    }

    private func hello(name: String, from connection: ClientConnection) throws(BrokerError) -> Outcome {
        guard connection.state == .awaitingHello else {
            throw BrokerError(.invalidArgument, "hello was already said on this connection")
        }
        let peer = connection.credentials
        let id = registry.connect(
            Credentials(pid: peer.pid, uid: peer.uid, gid: peer.gid, supplementaryGroups: peer.groups), name: name,
            node: ProcessHandle.lastCPU(of: peer.pid).flatMap(NUMA.node(ofCPU:)))
        connection.state = .active(id)
        connectionOfClient[id] = connection.number
        // A pidfd tells us the process died even if a child inherited its socket.
        do {
            let handle = try ProcessHandle.open(pid: peer.pid)
            try poll.add(handle.rawValue, events: .readable, token: connection.processHandleToken)
            connection.processHandle = .some(handle)
        } catch {
            logger.warning("no pidfd for pid \(peer.pid) (\(error)): only socket EOF will tell when it exits")
        }
        logger.info("client joined", metadata: ["client": "\(id.rawValue)", "name": "\(name)", "pid": "\(peer.pid)",
                                                 "uid": "\(peer.uid)"])
        return Outcome(message: .welcome(id, brokerPID: getpid()))
    }

    /// Adopts the client's event socket after checking it is what it claims to be.
    private func subscribe(_ connection: ClientConnection, socket: consuming OwnedDescriptor) throws(BrokerError) {
        guard connection.events == nil else { throw BrokerError(.invalidArgument, "this client already subscribed") }
        guard UnixSocket.isSequencedPacketSocket(socket) else {
            throw BrokerError(.invalidArgument, "subscribe needs a SOCK_SEQPACKET Unix socket")
        }
        let channel = Channel(socket: socket, kind: .events)
        do {
            try channel.socket.setNonBlocking(true)
            try poll.add(channel.socket.rawValue, events: .readable, token: connection.token(for: channel))
        } catch {
            throw BrokerError(.internalError, "cannot watch the event socket: \(error)")
        }
        connection.events = channel
    }

    private func status() -> BrokerStatus {
        BrokerStatus(
            protocolVersion: WireProtocol.version, pid: getpid(), uptimeMilliseconds: now / 1000,
            clients: UInt32(registry.clients.count), segments: UInt32(registry.segments.count),
            grants: UInt32(registry.grants.count), attachments: UInt32(registry.attachments.count),
            openDescriptors: UInt32(max(FileSystem.openDescriptorCount(), 0)), numaNodes: UInt32(NUMA.configuredNodes))
    }
}
