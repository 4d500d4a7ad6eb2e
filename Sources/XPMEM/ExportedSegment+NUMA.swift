import Synchronization
import SystemPackage
import XPMEMSystem
import XPMEMWire

/// How `ExportedSegment.migrate(to:)` moves pages that importers map.
public enum MigrationPath: String, Sendable, CaseIterable {
    /// Privileged if this process may (`CAP_SYS_NICE`), else cooperative.
    case automatic
    /// `mbind(MPOL_MF_MOVE_ALL)`: moves every page, whoever maps it, without disturbing importers.
    /// Needs `CAP_SYS_NICE`.
    case privileged
    /// The invalidation protocol: importers drop their page-table entries (with `.block`, their
    /// accesses sleep), the exporter — now the only process mapping the pages — moves them with
    /// `mbind(MPOL_MF_MOVE)`, then `end` gives access back on the new node. Needs no privilege.
    case cooperative
}

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

    public var description: String {
        var text = "\(moved) of \(pages) pages moved to node \(node) (\(alreadyThere) already there) by the \(path.rawValue) path"
        if notMoved > 0 { text += "; \(notMoved) not moved: \(notMovedReason ?? "unknown")" }
        return text
    }
}

extension ExportedSegment {
    /// The node of every page of the segment (a negative errno for a page that could not be
    /// queried). Pages never touched are allocated by this call, under the segment's placement.
    public func pageNodes() throws(XPMEMError) -> [Int32] {
        do {
            defer { withExtendedLifetime(self) {} }
            return try NUMA.pageNodes(address: bytes.baseAddress!, length: size, pageSize: pageSize, populate: true)
        } catch {
            throw XPMEMError.system("move_pages query of segment \(id)", error)
        }
    }

    /// How many of the segment's pages are on each node.
    public func pagesPerNode() throws(XPMEMError) -> [Int: Int] { NUMA.histogram(try pageNodes()) }

    /// Where the segment's pages are meant to be.
    public var placement: Placement { state.withLock { $0.placement } }

    /// Moves every page of the segment to `node` while importers keep it attached, and makes `node`
    /// the segment's policy for pages faulted later. See `MigrationPath` for the two ways.
    /// - Parameter deadline: for the cooperative path, how long importers get to acknowledge.
    public func migrate(to node: Int, path: MigrationPath = .automatic, deadline: Duration = .seconds(5))
        throws(XPMEMError) -> MigrationReport
    {
        guard NUMA.isAvailable else { throw XPMEMError(.invalidArgument, "migration needs NUMA support, which this kernel lacks") }
        try Placement.checkNodes([node])
        let clock = ContinuousClock()
        let started = clock.now
        let before = try pageNodes()
        let base = bytes.baseAddress!
        var taken = path == .cooperative ? MigrationPath.cooperative : .privileged
        var invalidation: InvalidationReport?
        // Strict: success means every page now follows the policy, which spares a second query;
        // EIO means some could not move, and the query after says which.
        var everyPageMoved = false
        if taken == .privileged {
            do {
                try NUMA.setPolicy(.bind([node]), address: base, length: size, move: .allPages, strict: true)
                everyPageMoved = true
            } catch .ioError {
                everyPageMoved = false
            } catch .notPermitted where path == .automatic {
                taken = .cooperative
            } catch .notPermitted {
                throw XPMEMError(.permissionDenied,
                    "moving pages other processes map needs CAP_SYS_NICE; use the cooperative path", errno: .notPermitted)
            } catch {
                throw XPMEMError.system("mbind(MPOL_MF_MOVE_ALL) to node \(node)", error)
            }
        }
        if taken == .cooperative {
            let report = try beginInvalidation(deadline: deadline, reason: .migrate)
            invalidation = report
            do {
                try NUMA.setPolicy(.bind([node]), address: base, length: size, move: .ownPages, strict: true)
                everyPageMoved = true
            } catch .ioError {
                everyPageMoved = false
            } catch {
                try? endInvalidation(report)
                throw XPMEMError.system("mbind(MPOL_MF_MOVE) to node \(node)", error)
            }
            try endInvalidation(report)
        }
        let target = Int32(node)
        let after: [Int32]
        if everyPageMoved {
            after = Array(repeating: target, count: before.count)
        } else {
            do {
                after = try NUMA.pageNodes(address: base, length: size, pageSize: pageSize, populate: false)
            } catch {
                throw XPMEMError.system("move_pages query of segment \(id)", error)
            }
        }
        let alreadyThere = before.filter { $0 == target }.count
        let moved = zip(before, after).filter { $0.0 != target && $0.1 == target }.count
        let notMoved = after.filter { $0 != target }.count
        var reason: String?
        if notMoved > 0 {
            let missed = invalidation?.importers.filter { $0.outcome == .missedDeadline || $0.outcome == .notSubscribed }.count ?? 0
            reason = taken == .cooperative
                ? "still mapped by another process (\(missed) importer(s) missed the deadline or cannot be told), or the node is full"
                : "the kernel could not move them (node full, or pages pinned)"
        }
        state.withLock { $0.placement = .node(node) }
        try broker.describePlacement(of: id, as: .node(node))
        return MigrationReport(node: node, path: taken, pages: after.count, moved: moved, alreadyThere: alreadyThere,
                               notMoved: notMoved, notMovedReason: reason, invalidation: invalidation,
                               elapsed: clock.now - started)
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
}

extension XPMEMBroker {
    /// Tells the broker where a segment's pages are meant to be (shown by `xpmemctl segments`).
    func describePlacement(of segment: SegmentID, as placement: Placement) throws(XPMEMError) {
        try channel.requestDone(.describePlacement(segment, placement: placement.description))
    }
}
