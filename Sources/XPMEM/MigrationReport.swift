import XPMEMWire

/// What a migration did.
public struct MigrationReport: Sendable, CustomStringConvertible {
    public var node: Int
    /// The path actually taken (`automatic` resolves to one of the others).
    public var path: MigrationPath
    public var pages: Int
    /// Pages that were elsewhere and are now on `node`.
    public var moved: Int
    /// Pages that were on `node` already.
    public var alreadyThere: Int
    /// Pages still elsewhere afterwards, and why.
    public var notMoved: Int
    public var notMovedReason: String?
    /// The invalidation that opened the window (cooperative path only).
    public var invalidation: InvalidationReport?
    public var elapsed: Duration
    /// Pages the first move left behind (busy at that instant) that were tried again, and in how many
    /// rounds (see `PageMoveRetry`); both 0 when the first move took every page.
    public var pagesRetried = 0
    public var retryRounds = 0
    /// Pages with nothing to move, once the pages hinted free (`ExportedSegment.hintFree`) and not
    /// written since were dropped: those (they read as zeros afterwards), and any page the segment's
    /// file never had. 0 when no page was dropped (then every page is allocated and counted above).
    public var skippedAsFree = 0

    public var description: String {
        var text = "\(moved) of \(pages) pages moved to node \(node) (\(alreadyThere) already there) by the \(path.rawValue) path"
        if pagesRetried > 0 {
            text += "; \(pagesRetried) page\(pagesRetried == 1 ? "" : "s") retried in \(retryRounds) round\(retryRounds == 1 ? "" : "s")"
        }
        if skippedAsFree > 0 { text += "; \(skippedAsFree) page\(skippedAsFree == 1 ? "" : "s") skipped as free" }
        if notMoved > 0 { text += "; \(notMoved) not moved: \(notMovedReason ?? "unknown")" }
        return text
    }
}
