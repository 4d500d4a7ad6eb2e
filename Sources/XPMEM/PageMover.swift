import SystemPackage
import XPMEMSystem

/// Moves every page of a range to one node: one strict `mbind` for the whole range, then, if it left
/// pages behind, `move_pages` again for those under `PageMoveRetry`; and says where every page ended up.
///
/// It only moves: who else may map the pages meanwhile (an invalidation window, or `MOVE_ALL`'s
/// privilege) is the caller's business.
struct PageMover: PageStatusSource {
    let pages: PageRange
    /// `.allPages` (`MOVE_ALL`, privileged) or `.ownPages` (`MOVE`, pages only this process maps).
    let moving: NUMA.Move
    var retry = PageMoveRetry()

    /// Where the pages are after a move.
    struct Result {
        /// The node of every page (a negative errno for a page that could not be queried).
        var nodes: [Int32]
        /// The retries of pages the first move left behind.
        var retries: PageMoveRetry.Outcome
    }

    /// Moves the pages to `node` and makes `node` the range's policy for pages faulted later.
    /// - Throws: `permissionDenied` when `MOVE_ALL` needs `CAP_SYS_NICE` this process lacks;
    ///   `systemCallFailed` when the kernel refuses the move or the query.
    func move(to node: Int) throws(XPMEMError) -> Result {
        do {
            // Strict: success means every page follows the policy now, which spares a query.
            if try pages.bind(to: node, moving: moving) {
                return Result(nodes: Array(repeating: Int32(node), count: pages.pageCount),
                              retries: PageMoveRetry.Outcome())
            }
        } catch .notPermitted where moving == .allPages {
            throw XPMEMError(.permissionDenied, "moving pages other processes map needs CAP_SYS_NICE",
                             errno: .notPermitted)
        } catch {
            throw XPMEMError.system("\(callName) to node \(node)", error)
        }
        var nodes: [Int32]
        do {
            nodes = try pages.nodes(populate: false)
        } catch {
            throw XPMEMError.system("move_pages query after \(callName)", error)
        }
        let target = Int32(node)
        let leftBehind = nodes.indices.filter { nodes[$0] != target }
        let retries = retry.moveLeftBehind(
            Dictionary(uniqueKeysWithValues: leftBehind.map { ($0, PageStatus(kernelStatus: nodes[$0])) }),
            to: node, using: self)
        for (page, status) in retries.statuses where status == .node(node) { nodes[page] = target }
        return Result(nodes: nodes, retries: retries)
    }

    func move(pages indexes: [Int], to node: Int) throws(Errno) -> [PageStatus] {
        try pages.move(pages: indexes, to: node, moving: moving)
    }

    private var callName: String { moving == .allPages ? "mbind(MPOL_MF_MOVE_ALL)" : "mbind(MPOL_MF_MOVE)" }
}
