@preconcurrency import CNuma
@preconcurrency import Glibc
import SystemPackage

extension NUMA {
    /// Moves each page at `pages` (page-aligned addresses in this process) to `node` and says where
    /// each one is afterwards, or why it could not move. Pages already there count as moved.
    ///
    /// With `.ownPages` a page another process maps is refused (`EACCES`); `.allPages` moves it too and
    /// needs `CAP_SYS_NICE` (`EPERM` for the whole call otherwise).
    /// The corresponding C function is `move_pages` with target nodes.
    public static func movePages(_ pages: [UnsafeMutableRawPointer], to node: Int, move: Move) throws(Errno)
        -> [PageStatus]
    {
        guard isAvailable else { throw Errno.noFunction }
        guard move != .none, nodes.contains(node) else { throw Errno.invalidArgument }
        guard !pages.isEmpty else { return [] }
        var addresses: [UnsafeMutableRawPointer?] = pages
        let targets = [Int32](repeating: Int32(node), count: pages.count)
        var status = [Int32](repeating: PageStatus.unreportedMarker, count: pages.count)
        // A positive result counts pages the kernel did not migrate; their entries keep the marker.
        let result = move_pages(0, UInt(pages.count), &addresses, targets, &status, CInt(move.flags))
        guard result >= 0 else { throw Errno(rawValue: errno) }
        return status.map(PageStatus.init(kernelStatus:))
    }
}
