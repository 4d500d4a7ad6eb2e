import SystemPackage
import XPMEMSystem

extension Attachment {
    /// The node of every page of the attached range, as this process maps it (a negative errno for
    /// a page that could not be queried). Every page is mapped (read) first so each one is reported.
    public func pageNodes() throws(XPMEMError) -> [Int32] {
        do {
            defer { withExtendedLifetime(self) {} }
            return try NUMA.pageNodes(address: bytes.baseAddress!, length: length, pageSize: pageSize, populate: true)
        } catch {
            throw XPMEMError.system("move_pages query of attachment \(id)", error)
        }
    }

    /// An operator's migration (`xpmemctl migrate`): moves every page of the attached range to
    /// `node` with `mbind(MPOL_MF_MOVE_ALL)`, whoever maps it, and makes `node` the policy for later
    /// faults. Needs `CAP_SYS_NICE`; without it, the exporter's `ExportedSegment.migrate(to:)` is
    /// the way (the cooperative path needs the one process that maps every page: the exporter).
    public func moveAllPages(to node: Int) throws(XPMEMError) -> MigrationReport {
        guard NUMA.isAvailable else { throw XPMEMError(.invalidArgument, "migration needs NUMA support, which this kernel lacks") }
        try Placement.checkNodes([node])
        let clock = ContinuousClock()
        let started = clock.now
        let before = try pageNodes()
        do {
            defer { withExtendedLifetime(self) {} }
            try NUMA.setPolicy(.bind([node]), address: bytes.baseAddress!, length: length, move: .allPages)
        } catch .notPermitted {
            throw XPMEMError(.permissionDenied,
                "moving pages that other processes map needs CAP_SYS_NICE; without it, the exporter migrates its "
                    + "segment cooperatively (ExportedSegment.migrate(to:))", errno: .notPermitted)
        } catch {
            throw XPMEMError.system("mbind(MPOL_MF_MOVE_ALL) to node \(node)", error)
        }
        let after = try pageNodes()
        let target = Int32(node)
        let notMoved = after.filter { $0 != target }.count
        return MigrationReport(
            node: node, path: .privileged, pages: after.count,
            moved: zip(before, after).filter { $0.0 != target && $0.1 == target }.count,
            alreadyThere: before.filter { $0 == target }.count, notMoved: notMoved,
            notMovedReason: notMoved > 0 ? "the kernel could not move them (node full, or pages pinned)" : nil,
            invalidation: nil, elapsed: clock.now - started)
    }
}
