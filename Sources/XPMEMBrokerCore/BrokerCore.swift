import XPMEMWire

/// Every decision the broker makes, apart from I/O. The daemon turns what happens on its sockets into
/// the inputs below — a peer connected, a request arrived, an acknowledgement arrived, a peer left,
/// time passed — and carries out the `BrokerEffect`s each returns. The core owns the registry of
/// segments, grants and attachments, the invalidation coordinator, the attaches waiting for an
/// invalidation to end, each peer's subscription, and the quotas.
public struct BrokerCore: Sendable {
    public internal(set) var registry: Registry
    public internal(set) var coordinator = InvalidationCoordinator()
    public let quotas: BrokerQuotas
    /// The most entries one `segments` or `clients` reply carries (a reply must fit one frame).
    public static let listingPageSize = 150

    let facts: BrokerFacts
    var peers: [PeerID: Peer] = [:]
    var peerOfClient: [ClientID: PeerID] = [:]
    var deferredAttaches: [DeferredAttach] = []
    /// Attaches of address-space segments waiting for their exporter, by `backRange` sequence.
    var pendingBackings: [UInt64: PendingBacking] = [:]
    var nextBackingSequence: UInt64 = 0
    /// Segments and declared bytes per owner uid, for the quotas.
    var usageOfUID: [UInt32: Usage] = [:]
    let startTime: UInt64

    struct Usage: Equatable {
        var connections = 0
        var segments = 0
        var bytes: UInt64 = 0
    }

    struct Peer {
        enum State: Equatable {
            /// Connected; only `hello` is accepted.
            case awaitingHello
            /// Connected beyond a quota: its `hello` is answered with this refusal, then it is closed.
            case refused(BrokerError)
            /// Said hello; known to the registry as this client.
            case active(ClientID)
            /// The core asked the daemon to close it; nothing more is served.
            case closing
        }

        var credentials: Credentials
        var node: Int?
        var state: State = .awaitingHello
        var subscribed = false

        var client: ClientID? {
            if case .active(let id) = state { return id }
            return nil
        }
    }

    /// - Parameter now: microseconds on the broker's monotonic clock, as every later input.
    public init(registry: Registry, quotas: BrokerQuotas = BrokerQuotas(), facts: BrokerFacts, now: UInt64 = 0) {
        self.registry = registry
        self.quotas = quotas
        self.facts = facts
        startTime = now
    }

    /// How many peers are connected, whether or not they said hello.
    public var peerCount: Int { peers.count }

    /// The client a peer became at hello, if it did.
    public func client(of peer: PeerID) -> ClientID? { peers[peer]?.client }

    /// The earliest deadline (an invalidation's, or a backing's): the daemon must call `tick` by then.
    public var nextDeadline: UInt64? {
        ([coordinator.nextDeadline].compactMap { $0 } + pendingBackings.values.map(\.deadline)).min()
    }

    /// Descriptors the broker holds for clients, counted the way the budget is.
    public var descriptorsInUse: Int {
        peers.count * BrokerQuotas.descriptorsPerConnection + registry.heldFiles.count * BrokerQuotas.descriptorsPerFile
    }

    // MARK: Inputs

    /// A connection was accepted. Within the budget it waits for hello; past a quota it is kept just
    /// long enough to be told why at hello; past the descriptor budget it is closed at once.
    public mutating func peerConnected(_ peer: PeerID, credentials: Credentials, node: Int?) -> [BrokerEffect] {
        if descriptorsInUse + BrokerQuotas.descriptorsPerConnection > quotas.descriptorCeiling(for: credentials) {
            return [.close(peer, reason: "the broker's descriptor budget is spent"),
                    .note(.quotaReached(uid: credentials.uid, pid: credentials.pid,
                                        "connection refused: the broker's descriptor budget of \(quotas.descriptorBudget) is spent"))]
        }
        var record = Peer(credentials: credentials, node: node)
        var usage = usageOfUID[credentials.uid, default: Usage()]
        var effects: [BrokerEffect] = []
        if !quotas.isAdministrator(credentials) && usage.connections >= quotas.connectionsPerUID {
            let refusal = BrokerError(.resourceExhausted,
                "uid \(credentials.uid) already has \(usage.connections) connections to this broker, its limit (--max-connections-per-uid)")
            record.state = .refused(refusal)
            effects.append(.note(.quotaReached(uid: credentials.uid, pid: credentials.pid, refusal.message)))
        }
        usage.connections += 1
        usageOfUID[credentials.uid] = usage
        peers[peer] = record
        return effects
    }

    /// The peer's connection is gone (closed, died, or dropped by the daemon): everything its client
    /// held goes, importers of its segments are told, and its part in invalidations ends.
    public mutating func peerDeparted(_ peer: PeerID, reason: String, now: UInt64) -> [BrokerEffect] {
        guard let record = peers.removeValue(forKey: peer) else { return [] }
        usageOfUID[record.credentials.uid]?.connections -= 1
        deferredAttaches.removeAll { $0.peer == peer }
        guard let client = record.client else { return [] }
        peerOfClient[client] = nil
        // From the client's own list, not a scan of every segment: a node's broker holds many.
        let owned = (registry.clients[client]?.segments ?? []).sorted().compactMap { registry.segments[$0] }
        let holdersOf = registry.grantHolders(ofEach: Set(owned.map(\.id)))
        let holders = owned.map { ($0.id, holdersOf[$0.id] ?? []) }
        let departure = registry.disconnect(client)
        var effects: [BrokerEffect] = []
        for record in owned {
            effects += forgetSegment(record, now: now)
        }
        for (segment, importers) in holders {
            for importer in importers where importer != client {
                effects += notify(importer, .released(segment, reason: .exporterExited))
            }
        }
        effects += apply(coordinator.clientDeparted(client, now: now), now: now)
        effects += settleBackings(now: now)
        effects.append(.note(.clientLeft(client, pid: record.credentials.pid, reason: reason,
                                         segmentsRemoved: departure.removedSegments.count,
                                         grantsReleased: departure.releasedGrants)))
        return effects
    }

    /// A frame arrived on the peer's event channel: an acknowledgement of an invalidation, or an
    /// exporter's answer to `backRange`. Anything else there is refused by the daemon before this.
    public mutating func event(_ message: Message, from peer: PeerID, now: UInt64) -> [BrokerEffect] {
        guard let client = peers[peer]?.client else { return [] }
        switch message {
        case .acknowledge(let segment, let sequence):
            return apply(coordinator.acknowledge(segment, sequence: sequence, from: client, now: now), now: now)
        case .rangeBacked(let segment, let sequence, let failure, let text, let extents):
            return rangeBacked(segment, sequence: sequence, failure: failure, text: text, extents: extents, from: peer)
        default:
            return [.close(peer, reason: "sent \(message.type) on its event channel")]
        }
    }

    /// Time passed: importers that missed an invalidation deadline lose their grants, and attaches
    /// whose exporter did not back the range in time fail.
    public mutating func tick(now: UInt64) -> [BrokerEffect] {
        apply(coordinator.expire(now: now), now: now) + settleBackings(now: now)
    }

    // MARK: Shared steps

    /// An event for a client, on its event channel if it has one.
    func notify(_ client: ClientID, _ message: Message) -> [BrokerEffect] {
        guard let peer = peerOfClient[client], peers[peer]?.subscribed == true else { return [] }
        return [.send(peer, .events, requestID: 0, message)]
    }

    /// A reply to a client's earlier request, if it is still connected.
    func reply(_ client: ClientID, requestID: UInt32, _ message: Message) -> [BrokerEffect] {
        guard let peer = peerOfClient[client] else { return [] }
        return [.send(peer, .main, requestID: requestID, message)]
    }

    /// A segment left the registry: its files close, its invalidations are abandoned, and its owner's
    /// quota is credited.
    mutating func forgetSegment(_ record: SegmentRecord, now: UInt64) -> [BrokerEffect] {
        usageOfUID[record.ownerCredentials.uid]?.segments -= 1
        usageOfUID[record.ownerCredentials.uid]?.bytes -= record.countedBytes
        return [.discardSegmentFiles(record.id)] + apply(coordinator.segmentRemoved(record.id), now: now)
            + settleBackings(now: now)
    }
}

extension SegmentRecord {
    /// What the segment counts against its owner's byte quota. An address-space window declares the
    /// whole address space but holds only what gets attached, which lives in the owner's own memory
    /// (and its memory cgroup) anyway: it counts nothing.
    var countedBytes: UInt64 { self.addressSpaceBase == nil ? self.size : 0 }
}
