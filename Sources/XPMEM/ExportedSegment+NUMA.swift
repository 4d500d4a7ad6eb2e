import Synchronization
import SystemPackage
import XPMEMSystem
import XPMEMWire

extension ExportedSegment {
    /// The node of every page of the segment (a negative errno for a page that could not be
    /// queried). Pages never touched are allocated by this call, under the segment's placement.
    public func pageNodes() throws(XPMEMError) -> [Int32] { try pageNodes(fillingHoles: true) }

    /// Without filling holes, a page that has none reports `-ENOENT`.
    func pageNodes(fillingHoles: Bool) throws(XPMEMError) -> [Int32] {
        do {
            defer { withExtendedLifetime(self) {} }
            return try pageRange.nodes(populate: fillingHoles)
        } catch {
            throw XPMEMError.system("move_pages query of segment \(id)", error)
        }
    }

    /// How many of the segment's pages are on each node.
    public func pagesPerNode() throws(XPMEMError) -> [Int: Int] { NUMA.histogram(try pageNodes()) }

    /// Where the segment's pages are meant to be.
    public var placement: Placement { state.withLock { $0.placement } }

    /// Moves every page of the segment to `node` while importers keep it attached, and makes `node`
    /// the segment's policy for pages faulted later. See `MigrationPath` for the two ways. Pages the
    /// kernel leaves behind because they were busy at that instant are tried again (`PageMoveRetry`);
    /// the report counts those retries.
    /// - Parameter deadline: for the cooperative path, how long importers get to acknowledge.
    public func migrate(to node: Int, path: MigrationPath = .automatic, deadline: Duration = .seconds(5))
        throws(XPMEMError) -> MigrationReport
    {
        guard NUMA.isAvailable else { throw XPMEMError(.invalidArgument, "migration needs NUMA support, which this kernel lacks") }
        try refuseHugeTLBMigration()
        try Placement.checkNodes([node])
        let clock = ContinuousClock()
        let started = clock.now
        // Pages hinted free go first, and then holes are left holes (filling them only to move them is
        // what a hint is there to spare): only the pages the file has are mapped here, so that the
        // query and the move see each of them, whoever wrote it.
        var census: PageCensus
        if hasFreePageHints, try dropFreePages() > 0 {
            try mapPagesOfTheFile()
            census = PageCensus(node: node, before: try pageNodes(fillingHoles: false))
            census.holesSkipped = true
        } else {
            census = PageCensus(node: node, before: try pageNodes())
        }
        // The policy changes first: a segment moved to a fresh file during the migration's window (an
        // importer missed its deadline) places the new file's pages by it.
        let previous = state.withLock { state in
            defer { state.placement = .node(node) }
            return state.placement
        }
        let moved: (pages: PageMover.Result, path: MigrationPath, invalidation: InvalidationReport?)
        do {
            moved = try move(to: node, by: MigrationPlan(requested: path), deadline: deadline)
        } catch {
            state.withLock { $0.placement = previous }
            throw error
        }
        try broker.describePlacement(of: id, as: .node(node))
        return census.report(after: moved.pages, path: moved.path, invalidation: moved.invalidation,
                             elapsed: clock.now - started)
    }

    /// Moves the pages by the plan's first path, and by the cooperative one if the plan falls back.
    private func move(to node: Int, by plan: MigrationPlan, deadline: Duration) throws(XPMEMError)
        -> (pages: PageMover.Result, path: MigrationPath, invalidation: InvalidationReport?)
    {
        if plan.firstPath == .privileged {
            do {
                return (try PageMover(pages: pageRange, moving: .allPages).move(to: node), .privileged, nil)
            } catch {
                try plan.fallBackToCooperative(after: error)
            }
        }
        let cooperative = try CooperativeMigration(segment: self, deadline: deadline).move(pageRange, to: node)
        return (cooperative.pages, .cooperative, cooperative.invalidation)
    }

    /// For `.nearImporters` (or any placement): migrates the pages to the node where most of the
    /// segment's attached bytes are used, as the broker sees it; nil if nothing is attached by a
    /// client whose node is known, or the pages are meant to be there already.
    public func followImporters(path: MigrationPath = .automatic, deadline: Duration = .seconds(5))
        throws(XPMEMError) -> MigrationReport?
    {
        guard let summary = try broker.segments().first(where: { $0.id == id.description }),
              summary.importerNode >= 0 else { return nil }
        return try migrate(to: Int(summary.importerNode), path: path, deadline: deadline)
    }

    /// Migration counts and moves base pages, one by one: a hugetlb segment's pages are moved by the
    /// pool's placement (`placement:` at `makeSegment`), not by `migrate`.
    private func refuseHugeTLBMigration() throws(XPMEMError) {
        guard hugePages == .hugeTLB else { return }
        throw XPMEMError(.invalidArgument,
            "segment \(id) has hugetlb pages, which migrate does not move; give it a placement when it is made instead")
    }

    /// Maps here every page the segment's file has (its data extents), allocating none.
    private func mapPagesOfTheFile() throws(XPMEMError) {
        try state.withLock { state throws(XPMEMError) in
            switch state.file {
            case .some(let file):
                do throws(Errno) {
                    for extent in try MemoryFile.dataExtents(of: file, length: size) {
                        try pageRange.mapExistingPages(extent)
                    }
                } catch {
                    throw XPMEMError.system("mapping the pages of segment \(id)'s file", error)
                }
            case .none:
                return
            }
        }
    }

    /// The segment's pages in this process, for queries and moves.
    var pageRange: PageRange { PageRange(base: bytes.baseAddress!, length: size, pageSize: pageSize) }
}

extension XPMEMBroker {
    /// Tells the broker where a segment's pages are meant to be (shown by `xpmemctl segments`).
    func describePlacement(of segment: SegmentID, as placement: Placement) throws(XPMEMError) {
        try channel.requestDone(.describePlacement(segment, placement: placement.description))
    }
}
