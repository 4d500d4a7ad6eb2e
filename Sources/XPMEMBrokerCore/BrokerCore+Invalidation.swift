import XPMEMWire

extension BrokerCore {
    /// The importers an invalidation must wait for: every client mapping part of the range.
    func targets(of request: InvalidationRequest) -> [InvalidationTarget] {
        registry.importers(of: request.segment, overlapping: request.offset, length: request.length).map { client in
            let peer = peerOfClient[client].flatMap { peers[$0] }
            return InvalidationTarget(client: client, pid: peer?.credentials.pid ?? 0, subscribed: peer?.subscribed ?? false)
        }
    }

    /// Turns the coordinator's decisions into the daemon's: sends, revocations, queued invalidations
    /// that may start, attaches that may be served.
    mutating func apply(_ decisions: [InvalidationEffect], now: UInt64) -> [BrokerEffect] {
        var effects: [BrokerEffect] = []
        for decision in decisions {
            switch decision {
            case .notify(let client, let message):
                effects += notify(client, message)
            case .reply(let client, let requestID, let message):
                if case .invalidated(let report) = message { effects.append(.note(.invalidationAcknowledged(report))) }
                effects += reply(client, requestID: requestID, message)
            case .revokeGrants(let client, let segment):
                let revoked = registry.revokeGrants(of: client, on: segment)
                effects += notify(client, .released(segment, reason: .deadlineMissed))
                effects.append(.note(.deadlineMissed(client, segment, grantsRevoked: revoked)))
            case .ready(let request):
                effects += apply(coordinator.start(request, targets: targets(of: request), now: now), now: now)
            case .rangeReopened(let segment):
                effects += retryDeferredAttaches(on: segment, now: now)
            }
        }
        return effects
    }

    /// Serves the attaches that waited for `segment`'s invalidation (or whose grant has gone), in
    /// arrival order; those still blocked by a queued invalidation park again.
    private mutating func retryDeferredAttaches(on segment: SegmentID, now: UInt64) -> [BrokerEffect] {
        let waiting = deferredAttaches.filter { request in
            guard let grant = registry.grants[request.handle] else { return true }
            return grant.segment == segment
        }
        guard !waiting.isEmpty else { return [] }
        deferredAttaches.removeAll { waiting.contains($0) }
        return waiting.flatMap { request in
            peers[request.peer] == nil ? [] : attach(request, now: now)
        }
    }

    /// Records an attachment and hands over the segment's memfd, or parks the request while an
    /// invalidation of an overlapping range is in flight.
    mutating func attach(_ request: DeferredAttach, now: UInt64) -> [BrokerEffect] {
        do throws(BrokerError) {
            guard let grant = registry.grants[request.handle], grant.client == request.client else {
                throw Registry.handleNotFound(request.handle)
            }
            if coordinator.blocksAccess(to: grant.segment, offset: request.offset, length: request.length) {
                deferredAttaches.append(request)
                return []
            }
            let attachment = try registry.attach(request.handle, offset: request.offset, length: request.length,
                                                 by: request.client)
            if let base = registry.segments[attachment.segment]?.addressSpaceBase {
                return requestBacking(of: attachment, base: base, importer: request.peer, requestID: request.requestID,
                                      now: now)
            }
            if attachment.access == .readWrite { registry.writableFileHandedOut(of: attachment.segment) }
            return [.send(request.peer, .main, requestID: request.requestID, .attached(attachment.id),
                          handOver: SegmentFileHandOver(segment: attachment.segment, access: attachment.access))]
        } catch {
            return [.send(request.peer, .main, requestID: request.requestID, .failure(error.code, error.message))]
        }
    }
}
