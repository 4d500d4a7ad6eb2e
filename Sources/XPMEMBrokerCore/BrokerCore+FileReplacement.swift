import XPMEMWire

/// `replaceSegmentFiles`: the owner moved a segment's bytes to a fresh memfd. Revocation made real for
/// an importer that missed an invalidation deadline: its grants are gone, but the memfd it was given
/// still aliases the live pages until the owner moves them; from then on the broker hands out the new
/// file, and every importer still mapping the segment is sent it to map in place of the old (one
/// without an event channel cannot be, and loses its grants on the segment instead).
extension BrokerCore {
    mutating func replaceSegmentFiles(_ id: SegmentID, by client: ClientID) throws(BrokerError) -> [BrokerEffect] {
        guard let record = registry.segments[id] else { throw Registry.segmentNotFound(id) }
        guard record.owner == client else {
            throw BrokerError(.permissionDenied, "only the owner of segment \(id) may replace its file")
        }
        guard record.addressSpaceBase == nil else {
            throw BrokerError(.invalidArgument,
                "segment \(id) is a window of its owner's address space; that file is the owner's memory and is not replaced")
        }
        // One event per importer and kind of attachment, each with the file opened as that kind allows:
        // an importer holding only read-only attachments never sees a writable descriptor.
        registry.segmentFileReplaced(id)
        var told = Set<ClientID>()
        var events: [BrokerEffect] = []
        let mappers = Set(registry.attachments(of: id).map { Mapper(client: $0.client, access: $0.access) })
        for mapper in mappers.sorted() {
            guard let peer = peerOfClient[mapper.client], peers[peer]?.subscribed == true else {
                // No event channel to send the new file on: its mapping stays on the old file, which
                // no longer is the segment. Its grants go, so that the registry says so and a later
                // attach through them does not mix the two files.
                registry.revokeGrants(of: mapper.client, on: id)
                continue
            }
            if mapper.access == .readWrite { registry.writableFileHandedOut(of: id) }
            events.append(.send(peer, .events, requestID: 0, .segmentFileReplaced(id, access: mapper.access),
                                handOver: SegmentFileHandOver(segment: id, access: mapper.access)))
            told.insert(mapper.client)
        }
        return [.keepSegmentFiles(id)] + events + [.note(.segmentFileReplaced(id, importersTold: told.count))]
    }

    private struct Mapper: Hashable, Comparable {
        var client: ClientID
        var access: AccessMode

        static func < (left: Mapper, right: Mapper) -> Bool {
            (left.client.rawValue, left.access.rawValue) < (right.client.rawValue, right.access.rawValue)
        }
    }

    /// The daemon could not open the new file for `peer` (out of descriptors) when it came to send a
    /// `segmentFileReplaced`: rather than leave that importer mapping the old file unknowingly, its
    /// grants on the segment go and it is told the segment is released.
    public mutating func fileHandOverFailed(_ handOver: SegmentFileHandOver, to peer: PeerID) -> [BrokerEffect] {
        guard let client = peers[peer]?.client else { return [] }
        let revoked = registry.revokeGrants(of: client, on: handOver.segment)
        guard revoked > 0 else { return [] }
        return notify(client, .released(handOver.segment, reason: .fileNotDelivered))
            + [.note(.fileNotDelivered(client, handOver.segment, grantsRevoked: revoked))]
    }
}
