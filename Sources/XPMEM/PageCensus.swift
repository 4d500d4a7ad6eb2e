import XPMEMSystem
import XPMEMWire

/// Where a migration found a range's pages, compared with where it left them: counts what moved, what
/// was there already and what stayed behind, says why, and makes the `MigrationReport`.
struct PageCensus {
    let node: Int
    /// The node of every page before the move (negative errnos for pages that could not be queried).
    let before: [Int32]
    /// Set when the broker dropped pages hinted free just before: `before` was then taken without
    /// filling holes, and a page the file has none for (`-ENOENT`) is neither moved nor left behind,
    /// since nothing is there to move; the report counts those as skipped.
    var holesSkipped = false

    /// - Parameters:
    ///   - moved: where the pages are now, and the retries it took.
    ///   - invalidation: the window of a cooperative move, whose laggards explain pages left behind.
    func report(after moved: PageMover.Result, path: MigrationPath, invalidation: InvalidationReport?,
                elapsed: Duration) -> MigrationReport
    {
        let target = Int32(node)
        let after = moved.nodes
        let counted = after.indices.filter { !holesSkipped || !PageStatus(kernelStatus: before[$0]).isAbsent }
        let notMoved = counted.filter { after[$0] != target }.count
        return MigrationReport(
            node: node, path: path, pages: after.count,
            moved: counted.filter { before[$0] != target && after[$0] == target }.count,
            alreadyThere: counted.filter { before[$0] == target }.count,
            notMoved: notMoved,
            notMovedReason: notMoved > 0 ? reason(path: path, invalidation: invalidation, retries: moved.retries) : nil,
            invalidation: invalidation, elapsed: elapsed,
            pagesRetried: moved.retries.pagesRetried, retryRounds: moved.retries.rounds, skippedAsFree: after.count - counted.count)
    }

    /// Why pages stayed behind: what the path makes likely, then what the kernel said about them last.
    private func reason(path: MigrationPath, invalidation: InvalidationReport?, retries: PageMoveRetry.Outcome) -> String {
        var text: String
        if path == .cooperative {
            let missed = invalidation?.importers.filter { $0.outcome == .missedDeadline || $0.outcome == .notSubscribed }.count ?? 0
            text = "still mapped by another process (\(missed) importer(s) missed the deadline or cannot be told), or the node is full"
        } else {
            text = "the kernel could not move them (node full, or pages pinned)"
        }
        let statuses = retries.leftBehind(on: node).values.reduce(into: [String: Int]()) { $0[$1.description, default: 0] += 1 }
        if retries.rounds > 0, !statuses.isEmpty {
            let counts = statuses.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
            text += "; last status after \(retries.rounds) retry round\(retries.rounds == 1 ? "" : "s"): \(counts)"
        }
        return text
    }
}
