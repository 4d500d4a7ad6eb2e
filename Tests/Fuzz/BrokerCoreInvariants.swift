@testable import XPMEMBrokerCore
import XPMEMWire

/// What must hold of a `BrokerCore` after every input, checked against its state and against what
/// the daemon has been told (`DaemonView`).
enum BrokerCoreInvariants {
    static func checkAll(_ core: BrokerCore, against daemon: DaemonView) {
        checkPeers(core, daemon)
        checkRegistry(core.registry)
        checkOwnership(core, daemon)
        checkQuotas(core)
        checkWaiting(core, daemon)
    }

    /// The core knows exactly the connected peers; each client is one active peer and back.
    private static func checkPeers(_ core: BrokerCore, _ daemon: DaemonView) {
        check(Set(core.peers.keys) == Set(daemon.connectedPeers),
                   "the core knows peers \(core.peers.keys.sorted()), the daemon \(daemon.connectedPeers)")
        var clients = 0
        for (peer, record) in core.peers {
            check(record.subscribed == daemon.subscribed.contains(peer), "\(peer)'s event channel differs")
            guard let client = record.client else { continue }
            clients += 1
            check(core.peerOfClient[client] == peer, "\(client) of \(peer) maps to \(String(describing: core.peerOfClient[client]))")
            check(core.registry.clients[client] != nil, "\(client) of \(peer) is not in the registry")
        }
        check(core.peerOfClient.count == clients && core.registry.clients.count == clients,
                   "\(clients) active peers, \(core.peerOfClient.count) mapped clients, \(core.registry.clients.count) registered")
    }

    /// Every record points at records that exist, and each client's sets list exactly its records.
    private static func checkRegistry(_ registry: Registry) {
        for (id, client) in registry.clients {
            check(client.segments == Set(registry.segments.values.filter { $0.owner == id }.map(\.id)),
                       "\(id)'s segments differ from the segments it owns")
            check(client.grants == Set(registry.grants.values.filter { $0.client == id }.map(\.handle)),
                       "\(id)'s grants differ from the grants it holds")
            check(client.attachments == Set(registry.attachments.values.filter { $0.client == id }.map(\.id)),
                       "\(id)'s attachments differ from the attachments it made")
        }
        for grant in registry.grants.values {
            check(registry.clients[grant.client] != nil, "\(grant.handle) held by departed \(grant.client)")
        }
        let bySegment = Dictionary(grouping: registry.attachments.values, by: \.segment).mapValues { Set($0.map(\.id)) }
        check(registry.attachmentsOfSegment == bySegment,
              "the attachments indexed by segment differ from the attachments of each segment")
        for segment in registry.segments.values {
            // A kernel file's pages: a power of two, at least the base page; an address space's are base pages.
            check(segment.pageSize >= registry.limits.pageSize && segment.pageSize & (segment.pageSize - 1) == 0
                      && segment.size % segment.pageSize == 0
                      && (segment.addressSpaceBase == nil || segment.pageSize == registry.limits.pageSize),
                  "\(segment.id) has \(segment.pageSize)-byte pages for \(segment.size) bytes")
            checkFreePages(segment, pageSize: segment.pageSize)
        }
        for attachment in registry.attachments.values {
            guard let grant = registry.grants[attachment.handle] else {
                fatalError("invariant broken: \(attachment.id) outlived its grant \(attachment.handle)")
            }
            check(grant.client == attachment.client && grant.segment == attachment.segment
                       && grant.access == attachment.access, "\(attachment.id) does not match its grant")
            let pageSize = registry.segments[attachment.segment]?.pageSize ?? registry.limits.pageSize
            check(attachment.length > 0 && attachment.offset % pageSize == 0
                       && attachment.length % pageSize == 0, "\(attachment.id) is not aligned to its segment's pages")
        }
    }

    /// Hints are whole pages inside the segment, sorted and apart; none survive a writable hand-out,
    /// and an address-space window never has any.
    private static func checkFreePages(_ segment: SegmentRecord, pageSize: UInt64) {
        let ranges = segment.freePages.ranges
        check(ranges.allSatisfy { !$0.isEmpty && $0.lowerBound % pageSize == 0 && $0.upperBound % pageSize == 0
                                  && $0.upperBound <= segment.size },
              "\(segment.id)'s free pages \(ranges) are not whole pages inside its \(segment.size) bytes")
        check(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound < $1.lowerBound },
              "\(segment.id)'s free pages \(ranges) are unsorted, overlapping or adjacent")
        check(ranges.count <= FreePageHints.maximumRanges, "\(segment.id) keeps \(ranges.count) free ranges")
        check(!segment.freePages.writableFileHandedOut || ranges.isEmpty,
              "\(segment.id) keeps free pages after its file went out read-write")
        check(segment.addressSpaceBase == nil || ranges.isEmpty, "address-space window \(segment.id) keeps free pages")
    }

    /// No segment outlives its owner, and the daemon holds the files of exactly the live segments.
    private static func checkOwnership(_ core: BrokerCore, _ daemon: DaemonView) {
        for segment in core.registry.segments.values {
            guard let peer = core.peerOfClient[segment.owner] else {
                fatalError("invariant broken: \(segment.id) is owned by \(segment.owner), which departed")
            }
            check(core.peers[peer]?.credentials == segment.ownerCredentials, "\(segment.id)'s owner credentials differ")
        }
        check(Set(daemon.heldFiles.keys) == Set(core.registry.segments.keys),
                   "the daemon holds the files of \(daemon.heldFiles.count) segments, the registry has \(core.registry.segments.count)")
        check(Set(daemon.heldFiles.values).count == core.registry.heldFiles.count,
              "the daemon holds \(Set(daemon.heldFiles.values).count) files, the registry counts \(core.registry.heldFiles.count)")
    }

    /// The per-uid counters equal a recount (so none is negative), and the descriptor budget holds.
    private static func checkQuotas(_ core: BrokerCore) {
        var recount: [UInt32: BrokerCore.Usage] = [:]
        for record in core.peers.values { recount[record.credentials.uid, default: .init()].connections += 1 }
        for segment in core.registry.segments.values {
            recount[segment.ownerCredentials.uid, default: .init()].segments += 1
            recount[segment.ownerCredentials.uid, default: .init()].bytes += segment.countedBytes
        }
        for uid in Set(recount.keys).union(core.usageOfUID.keys) {
            let counted = core.usageOfUID[uid, default: .init()]
            check(counted.connections >= 0 && counted.segments >= 0, "uid \(uid)'s counters went negative: \(counted)")
            check(counted == recount[uid, default: .init()],
                       "uid \(uid) counts \(counted), a recount finds \(recount[uid, default: .init()])")
        }
        check(core.descriptorsInUse <= core.quotas.descriptorBudget,
                   "\(core.descriptorsInUse) descriptors in use, past the budget of \(core.quotas.descriptorBudget)")
    }

    /// What waits refers to live peers and segments; when nothing waits (no invalidation in flight, no
    /// parked attach, no backing), every request of a peer still served has had its reply.
    private static func checkWaiting(_ core: BrokerCore, _ daemon: DaemonView) {
        for pending in core.pendingBackings.values {
            check(core.peers[pending.importer] != nil && core.peers[pending.exporter] != nil
                       && core.registry.segments[pending.segment] != nil,
                       "backing \(pending.sequence) waits for a peer or segment that is gone")
        }
        for attach in core.deferredAttaches {
            check(core.peers[attach.peer] != nil, "an attach of departed \(attach.peer) is parked")
        }
        guard core.pendingBackings.isEmpty, core.deferredAttaches.isEmpty, core.coordinator.inFlightCount == 0 else { return }
        let forgotten = daemon.unanswered.filter { !daemon.closing.contains($0.peer) }
        check(forgotten.isEmpty, "nothing waits, yet requests were never answered: \(forgotten)")
    }
}
