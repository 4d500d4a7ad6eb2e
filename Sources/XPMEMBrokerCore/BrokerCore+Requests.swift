import XPMEMWire

extension BrokerCore {
    /// A request arrived on the peer's main socket. Descriptors it carried have been checked by the
    /// daemon (a `make`'s two memfd descriptors, a `subscribe`'s socket); effects say whether to keep them.
    /// - Parameters:
    ///   - filePageSize: the page size of the memfd a `make` or `claim` carries, as the daemon read it
    ///     from the file (nil: the base page size).
    ///   - file: which file that memfd is, as the daemon read it (nil: not told, never shared).
    public mutating func handle(
        _ message: Message, requestID: UInt32, from peer: PeerID, now: UInt64, filePageSize: UInt64? = nil,
        file: FileIdentity? = nil
    ) -> [BrokerEffect] {
        guard let record = peers[peer], record.state != .closing else { return [] }
        do throws(BrokerError) {
            if case .hello(let name) = message { return try hello(name: name, peer: peer, requestID: requestID) }
            guard let client = record.client else { throw BrokerError(.notConnected, "say hello first") }
            return try serve(message, requestID: requestID, from: peer, client: client, credentials: record.credentials,
                             now: now, filePageSize: filePageSize, file: file)
        } catch {
            return [.send(peer, .main, requestID: requestID, .failure(error.code, error.message))]
        }
    }

    private mutating func hello(name: String, peer: PeerID, requestID: UInt32) throws(BrokerError) -> [BrokerEffect] {
        guard var record = peers[peer] else { return [] }
        switch record.state {
        case .awaitingHello:
            break
        case .refused(let refusal):
            record.state = .closing
            peers[peer] = record
            return [.send(peer, .main, requestID: requestID, .failure(refusal.code, refusal.message)),
                    .close(peer, reason: "refused: \(refusal.message)")]
        case .active, .closing:
            throw BrokerError(.invalidArgument, "hello was already said on this connection")
        }
        let credentials = record.credentials
        let id = registry.connect(credentials, name: name, node: record.node)
        record.state = .active(id)
        peers[peer] = record
        peerOfClient[id] = peer
        return [
            .watchProcess(peer, pid: credentials.pid),
            .send(peer, .main, requestID: requestID, .welcome(id, brokerPID: facts.brokerPID)),
            .note(.clientJoined(id, name: name, pid: credentials.pid, uid: credentials.uid)),
        ]
    }

    private mutating func serve(
        _ message: Message, requestID: UInt32, from peer: PeerID, client: ClientID, credentials: Credentials, now: UInt64,
        filePageSize: UInt64?, file: FileIdentity?
    ) throws(BrokerError) -> [BrokerEffect] {
        func answer(_ reply: Message) -> [BrokerEffect] { [.send(peer, .main, requestID: requestID, reply)] }
        switch message {
        case .make(let size, let permit, let name):
            try admitSegment(size: size, by: credentials)
            let id = try registry.make(by: client, size: size, permit: permit, name: name, pageSize: filePageSize)
            usageOfUID[credentials.uid, default: Usage()].segments += 1
            usageOfUID[credentials.uid, default: Usage()].bytes += size
            return [.keepSegmentFiles(id)] + answer(.made(id))
                + [.note(.segmentMade(id, size: size, permit: permit, pid: credentials.pid))]
        case .claim(let requested, let token, let size, let permit, let name):
            return try claim(requested, token: token, .memoryFile(size: size, pageSize: filePageSize), permit: permit, name: name,
                             requestID: requestID, from: peer, client: client, credentials: credentials)
        case .claimAddressSpace(let requested, let token, let base, let size, let permit, let name):
            return try claim(requested, token: token, .addressSpace(base: base, size: size, pageSize: filePageSize, file: file),
                             permit: permit, name: name,
                             requestID: requestID, from: peer, client: client, credentials: credentials)
        case .makeAddressSpace(let base, let size, let permit, let name):
            let sharer = registry.heldFiles.sharer(for: file, of: client)
            try admitSegment(size: 0, by: credentials, bringsAFile: sharer == nil)
            let id = try registry.makeAddressSpace(by: client, base: base, size: size, permit: permit, name: name,
                                                   pageSize: filePageSize, file: file)
            usageOfUID[credentials.uid, default: Usage()].segments += 1
            return [.keepSegmentFiles(id, sharing: sharer)] + answer(.made(id))
                + [.note(.segmentMade(id, size: size, permit: permit, pid: credentials.pid))]
        case .replaceSegmentFiles(let id):
            return try replaceSegmentFiles(id, by: client) + answer(.done)
        case .remove(let id):
            let importers = registry.grantHolders(of: id).filter { $0 != client }
            guard let record = registry.segments[id] else { throw Registry.segmentNotFound(id) }
            try registry.remove(id, by: client)
            var effects = forgetSegment(record, now: now)
            for importer in importers { effects += notify(importer, .released(id, reason: .removed)) }
            return effects + answer(.done) + [.note(.segmentRemoved(id, importersTold: importers.count))]
        case .get(let id, let access):
            let grant = try registry.get(id, access: access, by: client)
            return answer(.granted(grant.handle, size: registry.segments[id]?.size ?? 0, access: access))
        case .release(let handle):
            try registry.release(handle, by: client)
            return answer(.done)
        case .attach(let handle, let offset, let length):
            return attach(DeferredAttach(peer: peer, client: client, requestID: requestID, handle: handle, offset: offset,
                                         length: length), now: now)
        case .resolveFault(let handle, let offset, let length):
            return try resolveFault(handle, offset: offset, length: length, importer: peer, client: client,
                                    requestID: requestID, now: now)
        case .detach(let attachment):
            try registry.detach(attachment, by: client)
            return answer(.done)
        case .listSegments(let after):
            let page = registry.segmentSummaries(after: after, limit: Self.listingPageSize, visibleTo: credentials)
            return answer(.segments(page.list, more: page.more))
        case .listClients:
            return answer(.clients(Array(registry.clientSummaries().prefix(Self.listingPageSize))))
        case .queryStatus:
            return answer(.status(status(now: now)))
        case .subscribe:
            guard peers[peer]?.subscribed == false else {
                throw BrokerError(.invalidArgument, "this client already subscribed")
            }
            peers[peer]?.subscribed = true
            return [.adoptEventChannel(peer)] + answer(.done)
        case .invalidate(let id, let offset, let length, let deadline, let reason, let hold):
            try registry.authorizeInvalidation(of: id, offset: offset, length: length, by: client)
            let request = InvalidationRequest(
                segment: id, offset: offset, length: length, reason: reason, holdForChange: hold, requester: client,
                requestID: requestID, arrival: now, deadline: now + UInt64(deadline) * 1000)
            return apply(coordinator.submit(request, targets: targets(of: request), now: now), now: now)
        case .endInvalidation(let id, let sequence):
            let decisions = try coordinator.end(id, sequence: sequence, by: client)
            // The exporter need not wait while importers are told: answer it first.
            return answer(.done) + apply(decisions, now: now)
        case .describePlacement(let id, let placement):
            try registry.describePlacement(of: id, as: placement, by: client)
            return answer(.done) + [.note(.placementDescribed(id, placement))]
        case .describePages(let id, let pages):
            try registry.describePages(of: id, as: pages, by: client)
            return answer(.done)
        case .reportAttachCache(let counters):
            try registry.reportAttachCache(counters, by: client)
            return answer(.done)
        case .hintFree(let id, let offset, let length):
            return answer(.freePages(count: try registry.hintFree(id, offset: offset, length: length, by: client)))
        case .freeHintWritten(let id, let offset, let length):
            try registry.forgetFreeHint(id, offset: offset, length: length, by: client)
            return answer(.done)
        case .dropFreePages(let id):
            let ranges = try registry.takeFreePages(of: id, by: client)
            let pages = ranges.reduce(0) { $0 + ($1.upperBound - $1.lowerBound) } / registry.limits.pageSize
            // Dropped before the answer goes: the owner's migration that follows finds holes.
            return (ranges.isEmpty ? [] : [.dropPages(id, ranges, owner: peer)]) + answer(.freePages(count: pages))
        default:
            throw BrokerError(.malformedFrame, "\(message.type) is not a request")
        }
    }

    /// Refuses a segment that would take its owner's uid past a quota, or the broker past its descriptor
    /// budget. A window of a file the broker already holds (`bringsAFile` false) needs no descriptors,
    /// so the budget does not apply to it.
    func admitSegment(size: UInt64, by credentials: Credentials, bringsAFile: Bool = true) throws(BrokerError) {
        if bringsAFile && descriptorsInUse + BrokerQuotas.descriptorsPerFile > quotas.descriptorCeiling(for: credentials) {
            throw BrokerError(.resourceExhausted,
                "the broker's descriptor budget of \(quotas.descriptorBudget) is spent; remove segments or raise its RLIMIT_NOFILE")
        }
        guard !quotas.isAdministrator(credentials) else { return }
        let usage = usageOfUID[credentials.uid, default: Usage()]
        guard usage.segments < quotas.segmentsPerUID else {
            throw BrokerError(.resourceExhausted,
                "uid \(credentials.uid) already exports \(usage.segments) segments, its limit (--max-segments-per-uid)")
        }
        guard usage.bytes &+ size <= quotas.bytesPerUID, usage.bytes &+ size >= usage.bytes else {
            throw BrokerError(.resourceExhausted,
                "uid \(credentials.uid) exports \(usage.bytes) bytes; \(size) more would pass its limit of \(quotas.bytesPerUID) (--max-bytes-per-uid)")
        }
    }

    private func status(now: UInt64) -> BrokerStatus {
        BrokerStatus(
            protocolVersion: WireProtocol.version, pid: facts.brokerPID, uptimeMilliseconds: (now &- startTime) / 1000,
            clients: UInt32(registry.clients.count), segments: UInt32(registry.segments.count),
            grants: UInt32(registry.grants.count), attachments: UInt32(registry.attachments.count),
            openDescriptors: UInt32(max(facts.openDescriptorCount(), 0)), numaNodes: facts.numaNodes)
    }
}
