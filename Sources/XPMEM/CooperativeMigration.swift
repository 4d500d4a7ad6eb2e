import XPMEMSystem
import XPMEMWire

/// Moves a segment's pages without privilege: an invalidation window (reason `.migrate`) makes every
/// importer drop its page-table entries and acknowledge (with `.block`, their accesses sleep), so the
/// exporter is the only process mapping the pages and `MPOL_MF_MOVE` may move them; the window then
/// ends — also when the move fails — and importers get access back on the new node.
struct CooperativeMigration {
    let segment: ExportedSegment
    /// How long importers get to acknowledge.
    let deadline: Duration

    /// What the move did, and the invalidation that made it possible.
    struct Result {
        var pages: PageMover.Result
        var invalidation: InvalidationReport
    }

    func move(_ pages: PageRange, to node: Int) throws(XPMEMError) -> Result {
        let invalidation = try segment.beginInvalidation(deadline: deadline, reason: .migrate)
        let moved: PageMover.Result
        do {
            // Retries run inside the window too: outside it, importers map the pages again.
            moved = try PageMover(pages: pages, moving: .ownPages).move(to: node)
        } catch {
            try? segment.endInvalidation(invalidation)
            throw error
        }
        try segment.endInvalidation(invalidation)
        return Result(pages: moved, invalidation: invalidation)
    }
}
