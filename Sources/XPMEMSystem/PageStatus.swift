import SystemPackage

/// What `move_pages` said about one page.
public enum PageStatus: Sendable, Equatable, CustomStringConvertible {
    /// The page is on this node.
    case node(Int)
    /// The kernel could not move (or find) the page: `EBUSY`, `EACCES`, `ENOMEM`, `ENOENT`, `EFAULT`...
    case failed(Errno)
    /// The kernel gave no status for the page: it stopped after a batch it could not migrate whole, and
    /// returned how many pages it did not migrate instead (Linux ≥ 4.17).
    case unreported

    /// What the status array holds before the call: no node number or negated errno looks like it.
    static let unreportedMarker = Int32.min

    /// Reads one entry of `move_pages`'s status array (as `NUMA.pageNodes` returns them too): a node
    /// number, or a negated errno.
    public init(kernelStatus: Int32) {
        if kernelStatus == PageStatus.unreportedMarker {
            self = .unreported
        } else if kernelStatus >= 0 {
            self = .node(Int(kernelStatus))
        } else {
            self = .failed(Errno(rawValue: -kernelStatus))
        }
    }

    /// Whether the page does not exist (`ENOENT`: no page there, and the query was told not to fault
    /// one in).
    public var isAbsent: Bool { self == .failed(.noSuchFileOrDirectory) }

    public var description: String {
        switch self {
        case .node(let node): "on node \(node)"
        case .failed(let errno): "\(errno)"
        case .unreported: "no status reported"
        }
    }
}
