import XPMEMWire

extension Registry {
    /// Segments in id order after `after`, at most `limit`, and whether more follow.
    ///
    /// - Parameter viewer: who asks. A listing shows only what the viewer may `get` or owns (the
    ///   superuser sees everything), so a 0600 segment's id, owner and name stay private. Nil: all.
    public func segmentSummaries(
        after: SegmentID?, limit: Int, visibleTo viewer: Credentials? = nil
    ) -> (list: [SegmentSummary], more: Bool) {
        let ordered = segments.values.filter { record in
            guard after == nil || record.id > after! else { return false }
            guard let viewer else { return true }
            return viewer.uid == record.ownerCredentials.uid
                || PermissionPolicy.allows(viewer, access: .readOnly, owner: record.ownerCredentials, permit: record.permit)
        }.map(\.id).sorted()
        let page = ordered.prefix(limit).compactMap { id -> SegmentSummary? in
            guard let record = segments[id] else { return nil }
            let onSegment = grants.values.filter { $0.segment == id }
            let importers = Set(onSegment.map(\.client)).count
            let mapped = attachmentsOfSegment[id]?.count ?? 0
            return SegmentSummary(id: id, ownerPID: record.ownerCredentials.pid, ownerUID: record.ownerCredentials.uid,
                                  size: record.size, permit: record.permit, name: record.name,
                                  importers: UInt32(importers), attachments: UInt32(mapped),
                                  placement: record.placement, importerNode: Int32(importerNode(of: id) ?? -1),
                                  pages: record.pages)
        }
        return (page, ordered.count > limit)
    }

    /// Every connected client in connection order.
    public func clientSummaries() -> [ClientSummary] {
        clients.values.sorted { $0.id.rawValue < $1.id.rawValue }.map { client in
            ClientSummary(id: client.id.rawValue, pid: client.credentials.pid, uid: client.credentials.uid,
                          gid: client.credentials.gid, name: client.name, segments: UInt32(client.segments.count),
                          grants: UInt32(client.grants.count), attachments: UInt32(client.attachments.count),
                          node: Int32(client.node ?? -1), attachCache: client.attachCache)
        }
    }
}
