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
    /// faults; pages left behind because they were busy are tried again (`PageMoveRetry`). Needs
    /// `CAP_SYS_NICE`; without it, the exporter's `ExportedSegment.migrate(to:)` is the way (the
    /// cooperative path needs the one process that maps every page: the exporter).
    public func moveAllPages(to node: Int) throws(XPMEMError) -> MigrationReport {
        guard NUMA.isAvailable else { throw XPMEMError(.invalidArgument, "migration needs NUMA support, which this kernel lacks") }
        try Placement.checkNodes([node])
        let clock = ContinuousClock()
        let started = clock.now
        let census = PageCensus(node: node, before: try pageNodes())
        let moved: PageMover.Result
        do {
            defer { withExtendedLifetime(self) {} }
            let pages = PageRange(base: bytes.baseAddress!, length: length, pageSize: pageSize)
            moved = try PageMover(pages: pages, moving: .allPages).move(to: node)
        } catch where error.code == .permissionDenied {
            throw error.advising("without it, the exporter migrates its segment cooperatively (ExportedSegment.migrate(to:))")
        }
        return census.report(after: moved, path: .privileged, invalidation: nil, elapsed: clock.now - started)
    }
}
