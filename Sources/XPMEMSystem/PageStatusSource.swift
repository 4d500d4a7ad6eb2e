import SystemPackage

/// Something that can try to move pages, by index, to a node and say how each fared: `move_pages` on
/// a `PageRange` in the library, a scripted answer in tests (so the retry policy is tested without NUMA).
public protocol PageStatusSource {
    /// Tries to move the pages at these indexes to `node`; one status per page, in the same order.
    func move(pages indexes: [Int], to node: Int) throws(Errno) -> [PageStatus]
}
