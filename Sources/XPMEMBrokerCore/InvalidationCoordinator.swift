import XPMEMWire

/// An importer to be told about an invalidation.
public struct InvalidationTarget: Equatable, Sendable {
    public var client: ClientID
    public var pid: Int32
    /// Whether it has an event channel; one without cannot be told and is reported `notSubscribed`.
    public var subscribed: Bool

    public init(client: ClientID, pid: Int32, subscribed: Bool) {
        self.client = client
        self.pid = pid
        self.subscribed = subscribed
    }
}

/// An exporter's (or operator's) request to invalidate a range, with the times that bound it.
public struct InvalidationRequest: Equatable, Sendable {
    public var segment: SegmentID
    public var offset: UInt64
    public var length: UInt64
    public var reason: InvalidationReason
    /// Keep the range invalid until the requester sends `endInvalidation`.
    public var holdForChange: Bool
    public var requester: ClientID
    public var requestID: UInt32
    /// Microseconds on the broker's monotonic clock.
    public var arrival: UInt64
    public var deadline: UInt64

    public init(segment: SegmentID, offset: UInt64, length: UInt64, reason: InvalidationReason, holdForChange: Bool,
                requester: ClientID, requestID: UInt32, arrival: UInt64, deadline: UInt64) {
        self.segment = segment
        self.offset = offset
        self.length = length
        self.reason = reason
        self.holdForChange = holdForChange
        self.requester = requester
        self.requestID = requestID
        self.arrival = arrival
        self.deadline = deadline
    }

    func overlaps(offset other: UInt64, length otherLength: UInt64) -> Bool {
        byteRangesOverlap(offset, length, other, otherLength)
    }
}

/// What the daemon must do to carry out the coordinator's decisions.
public enum InvalidationEffect: Equatable, Sendable {
    /// Send an event on this client's event channel.
    case notify(ClientID, Message)
    /// Send this (deferred) reply on the client's main connection.
    case reply(ClientID, requestID: UInt32, Message)
    /// The client missed a deadline: revoke its grants on the segment and tell it.
    case revokeGrants(ClientID, SegmentID)
    /// A queued invalidation may start: find its targets and call `start`.
    case ready(InvalidationRequest)
    /// The segment has no invalidation in flight any more: retry attaches that waited for it.
    case rangeReopened(SegmentID)
}

/// The invalidation protocol's state, modelled on Linux's mmu notifiers: per segment, a sequence
/// number that is odd while an invalidation is in flight; one invalidation at a time per segment, the
/// others queued in arrival order; different segments independent. Pure state: no sockets, no clock.
public struct InvalidationCoordinator: Sendable {
    private enum Phase: Equatable {
        case awaitingAcknowledgements
        /// Acknowledged; the requester is changing the range and will send `endInvalidation`.
        case awaitingEnd
    }

    private struct Active {
        var request: InvalidationRequest
        var sequence: UInt64
        var phase: Phase = .awaitingAcknowledgements
        var start: UInt64
        var targets: [InvalidationTarget]
        var pending: Set<ClientID>
        var outcomes: [ClientID: (ImporterOutcome, UInt64)] = [:]
        var requesterGone = false
    }

    private var sequences: [SegmentID: UInt64] = [:]
    private var active: [SegmentID: Active] = [:]
    private var queued: [SegmentID: [InvalidationRequest]] = [:]

    public init() {}

    /// The segment's sequence number: even when idle, odd while an invalidation is in flight.
    public func sequence(of segment: SegmentID) -> UInt64 { sequences[segment] ?? 0 }

    /// Whether an attach of this range must wait for an invalidation's end.
    public func blocksAccess(to segment: SegmentID, offset: UInt64, length: UInt64) -> Bool {
        active[segment]?.request.overlaps(offset: offset, length: length) ?? false
    }

    /// The earliest deadline of an invalidation still waiting for acknowledgements.
    public var nextDeadline: UInt64? {
        active.values.filter { $0.phase == .awaitingAcknowledgements }.map(\.request.deadline).min()
    }

    /// How many importers' acknowledgements the invalidations in flight wait for.
    public var acknowledgementsAwaited: Int {
        active.values.reduce(0) { $0 + ($1.phase == .awaitingAcknowledgements ? $1.pending.count : 0) }
    }

    /// How many invalidations are in flight or queued.
    public var inFlightCount: Int { active.count + queued.values.reduce(0) { $0 + $1.count } }

    /// Starts `request` now if its segment is idle, otherwise queues it behind the one in flight.
    public mutating func submit(
        _ request: InvalidationRequest, targets: [InvalidationTarget], now: UInt64
    ) -> [InvalidationEffect] {
        if active[request.segment] != nil {
            queued[request.segment, default: []].append(request)
            return []
        }
        return start(request, targets: targets, now: now)
    }

    /// Begins an invalidation on an idle segment (after `submit`, or for a `.ready` request).
    public mutating func start(
        _ request: InvalidationRequest, targets: [InvalidationTarget], now: UInt64
    ) -> [InvalidationEffect] {
        precondition(active[request.segment] == nil, "one invalidation per segment at a time")
        let sequence = sequence(of: request.segment) + 1
        sequences[request.segment] = sequence
        var invalidation = Active(request: request, sequence: sequence, start: now, targets: targets, pending: [])
        var effects: [InvalidationEffect] = []
        for target in targets {
            if target.subscribed {
                invalidation.pending.insert(target.client)
                effects.append(.notify(target.client, .invalidateBegin(
                    request.segment, offset: request.offset, length: request.length, sequence: sequence,
                    reason: request.reason)))
            } else {
                invalidation.outcomes[target.client] = (.notSubscribed, 0)
            }
        }
        active[request.segment] = invalidation
        if invalidation.pending.isEmpty { effects += acknowledgementsComplete(request.segment, now: now) }
        return effects
    }

    /// Records an importer's acknowledgement; stale or unexpected ones are ignored.
    public mutating func acknowledge(
        _ segment: SegmentID, sequence: UInt64, from client: ClientID, now: UInt64
    ) -> [InvalidationEffect] {
        // Changed in place: a copy taken out of `active` would copy its pending set and outcomes on
        // the first change, for every acknowledgement (quadratic in the importers).
        guard let index = active.index(forKey: segment), active.values[index].sequence == sequence,
              active.values[index].pending.remove(client) != nil
        else { return [] }
        active.values[index].outcomes[client] = (.acknowledged, now - active.values[index].start)
        return active.values[index].pending.isEmpty ? acknowledgementsComplete(segment, now: now) : []
    }

    /// The requester has made its change: importers may access the range again.
    public mutating func end(
        _ segment: SegmentID, sequence: UInt64, by client: ClientID
    ) throws(BrokerError) -> [InvalidationEffect] {
        guard let invalidation = active[segment], invalidation.sequence == sequence else {
            throw BrokerError(.invalidArgument, "no invalidation \(sequence) of segment \(segment) is in flight")
        }
        guard invalidation.request.requester == client else {
            throw BrokerError(.permissionDenied, "invalidation \(sequence) of segment \(segment) was begun by another client")
        }
        guard invalidation.phase == .awaitingEnd else {
            throw BrokerError(.invalidArgument, "invalidation \(sequence) is still waiting for acknowledgements")
        }
        return finish(segment)
    }

    /// Handles every deadline that has passed: importers still pending are reported as having missed
    /// it and their grants are revoked.
    public mutating func expire(now: UInt64) -> [InvalidationEffect] {
        var effects: [InvalidationEffect] = []
        let overdue = active.filter { $0.value.phase == .awaitingAcknowledgements && $0.value.request.deadline <= now }
        for (segment, var invalidation) in overdue {
            for client in invalidation.pending.sorted(by: { $0.rawValue < $1.rawValue }) {
                invalidation.outcomes[client] = (.missedDeadline, now - invalidation.start)
                effects.append(.revokeGrants(client, segment))
            }
            invalidation.pending.removeAll()
            active[segment] = invalidation
            effects += acknowledgementsComplete(segment, now: now)
        }
        return effects
    }

    /// A client disconnected or died: as an importer it counts as acknowledged; as a requester its
    /// invalidations end by themselves; its queued requests are dropped.
    public mutating func clientDeparted(_ client: ClientID, now: UInt64) -> [InvalidationEffect] {
        var effects: [InvalidationEffect] = []
        for segment in Array(queued.keys) {
            queued[segment]?.removeAll { $0.requester == client }
        }
        for segment in Array(active.keys) {
            guard var invalidation = active[segment] else { continue }
            if invalidation.pending.remove(client) != nil {
                invalidation.outcomes[client] = (.exited, now - invalidation.start)
            }
            if invalidation.request.requester == client {
                invalidation.requesterGone = true
                invalidation.request.holdForChange = false
            }
            active[segment] = invalidation
            if invalidation.phase == .awaitingAcknowledgements && invalidation.pending.isEmpty {
                effects += acknowledgementsComplete(segment, now: now)
            } else if invalidation.phase == .awaitingEnd && invalidation.requesterGone {
                effects += finish(segment)
            }
        }
        return effects
    }

    /// The segment is gone: whatever was in flight or queued on it is abandoned (its importers are
    /// sent a release by the daemon), and requesters still waiting are told.
    public mutating func segmentRemoved(_ segment: SegmentID) -> [InvalidationEffect] {
        var effects: [InvalidationEffect] = []
        let failure = Message.failure(.notFound, "segment \(segment) was removed during the invalidation")
        if let invalidation = active.removeValue(forKey: segment),
           invalidation.phase == .awaitingAcknowledgements, !invalidation.requesterGone {
            effects.append(.reply(invalidation.request.requester, requestID: invalidation.request.requestID, failure))
        }
        for request in queued.removeValue(forKey: segment) ?? [] {
            effects.append(.reply(request.requester, requestID: request.requestID, failure))
        }
        sequences[segment] = nil
        effects.append(.rangeReopened(segment))
        return effects
    }

    // MARK: Steps

    private mutating func acknowledgementsComplete(_ segment: SegmentID, now: UInt64) -> [InvalidationEffect] {
        guard var invalidation = active[segment] else { return [] }
        invalidation.phase = .awaitingEnd
        active[segment] = invalidation
        let request = invalidation.request
        let importers = invalidation.targets.map { target in
            let (outcome, elapsed) = invalidation.outcomes[target.client] ?? (.exited, 0)
            return ImporterAcknowledgement(client: target.client.rawValue, pid: target.pid, outcome: outcome,
                                           elapsedMicroseconds: elapsed)
        }
        let report = InvalidationReport(segment: segment, sequence: invalidation.sequence, offset: request.offset,
                                        length: request.length, elapsedMicroseconds: now - request.arrival,
                                        importers: importers)
        var effects: [InvalidationEffect] = []
        if request.holdForChange {
            effects.append(.reply(request.requester, requestID: request.requestID, .invalidated(report)))
        } else {
            effects += finish(segment)
            if !invalidation.requesterGone {
                effects.append(.reply(request.requester, requestID: request.requestID, .invalidated(report)))
            }
        }
        return effects
    }

    private mutating func finish(_ segment: SegmentID) -> [InvalidationEffect] {
        guard let invalidation = active.removeValue(forKey: segment) else { return [] }
        let request = invalidation.request
        sequences[segment] = invalidation.sequence + 1
        var effects: [InvalidationEffect] = invalidation.targets.compactMap { target in
            guard invalidation.outcomes[target.client]?.0 == .acknowledged else { return nil }
            return .notify(target.client, .invalidateEnd(segment, offset: request.offset, length: request.length,
                                                         sequence: invalidation.sequence))
        }
        effects.append(.rangeReopened(segment))
        if var waiting = queued[segment], !waiting.isEmpty {
            let next = waiting.removeFirst()
            queued[segment] = waiting.isEmpty ? nil : waiting
            effects.append(.ready(next))
        }
        return effects
    }
}
