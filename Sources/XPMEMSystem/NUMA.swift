@preconcurrency import CNuma
@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// What libnuma and the kernel's memory-policy calls offer: the machine's nodes, a memory policy
/// for a range (`mbind`), and where a range's pages are (`move_pages` without target nodes).
///
/// `mbind` is called directly rather than through `numa_tonode_memory` and friends, which print
/// failures to stderr instead of returning them.
public enum NUMA {
    /// Whether the kernel supports the NUMA API (libnuma's `numa_available()`); every other call
    /// here checks it first.
    public static var isAvailable: Bool { numa_available() >= 0 }

    /// The number of configured NUMA nodes (1 when NUMA is unavailable).
    public static var configuredNodes: Int { isAvailable ? Int(numa_num_configured_nodes()) : 1 }

    /// The node numbers that exist, in order. They may be sparse (0 and 2, say).
    public static var nodes: [Int] {
        guard isAvailable else { return [0] }
        let highest = Int(numa_max_node())
        return (0...max(0, highest)).filter { numa_bitmask_isbitset(numa_all_nodes_ptr, UInt32($0)) != 0 }
    }

    /// The node of a CPU, or nil if unknown.
    public static func node(ofCPU cpu: Int) -> Int? {
        guard isAvailable, cpu >= 0 else { return nil }
        let node = numa_node_of_cpu(Int32(cpu))
        return node >= 0 ? Int(node) : nil
    }

    /// The node of the CPU the calling thread runs on right now.
    public static var currentNode: Int? { node(ofCPU: Int(cxpmem_current_cpu())) }

    /// The CPUs of a node, for pinning a thread there.
    public static func cpus(ofNode node: Int) -> [Int] {
        guard isAvailable, let mask = numa_allocate_cpumask() else { return [] }
        defer { numa_free_cpumask(mask) }
        guard numa_node_to_cpus(Int32(node), mask) == 0 else { return [] }
        return (0..<Int(mask.pointee.size)).filter { numa_bitmask_isbitset(mask, UInt32($0)) != 0 }
    }

    /// Restricts the calling thread (and threads it starts later) to the CPUs of `node`.
    /// The corresponding C function is `numa_run_on_node`.
    public static func runCurrentThread(onNode node: Int) throws(Errno) {
        guard isAvailable else { throw Errno.noFunction }
        guard numa_run_on_node(Int32(node)) == 0 else { throw Errno(rawValue: errno) }
    }

    /// Bytes of memory a node has free, or nil if unknown.
    public static func freeBytes(onNode node: Int) -> Int64? {
        guard isAvailable else { return nil }
        var free: Int64 = 0
        return numa_node_size64(Int32(node), &free) >= 0 ? free : nil
    }

    /// A kernel memory policy (`MPOL_*` with its nodes).
    public enum Policy: Sendable, Equatable {
        /// The process's default (first touch).
        case `default`
        /// Only these nodes.
        case bind([Int])
        /// Round-robin over these nodes, page by page.
        case interleave([Int])
        /// This node while it has memory, then others.
        case preferred(Int)

        var mode: Int32 {
            switch self {
            case .default: Int32(MPOL_DEFAULT)
            case .bind: Int32(MPOL_BIND)
            case .interleave: Int32(MPOL_INTERLEAVE)
            case .preferred: Int32(MPOL_PREFERRED)
            }
        }

        /// The nodes the policy names.
        public var nodes: [Int] {
            switch self {
            case .default: []
            case .bind(let nodes), .interleave(let nodes): nodes
            case .preferred(let node): [node]
            }
        }
    }

    /// What `mbind` does to pages that already exist.
    public enum Move: Sendable {
        /// Only set the policy; it governs pages faulted from now on.
        case none
        /// `MPOL_MF_MOVE`: move the pages only this process maps.
        case ownPages
        /// `MPOL_MF_MOVE_ALL`: move every page, whoever maps it (needs `CAP_SYS_NICE`).
        case allPages

        var flags: UInt32 {
            switch self {
            case .none: 0
            case .ownPages: UInt32(MPOL_MF_MOVE)
            case .allPages: UInt32(MPOL_MF_MOVE_ALL)
            }
        }
    }

    /// Node masks hold 128 bits: room for every node id libnuma reports on machines we know.
    static let maskWords = 2

    /// Sets the memory policy of `[address, address + length)` (`mbind`). For a shared mapping of a
    /// memfd the policy is stored on the file, so it governs every later fault of those pages by any
    /// process. Nodes that do not exist are refused here with `EINVAL` before the kernel is asked.
    /// The corresponding C function is `mbind`.
    /// With `strict`, the call fails with `EIO` when, afterwards, some existing page still does not
    /// follow the policy (a page that could not be moved): success then means every page did.
    public static func setPolicy(_ policy: Policy, address: UnsafeMutableRawPointer, length: Int, move: Move = .none,
                                 strict: Bool = false) throws(Errno)
    {
        guard isAvailable else { throw Errno.noFunction }
        let existing = Set(nodes)
        guard policy.nodes.allSatisfy({ existing.contains($0) && $0 < maskWords * 64 }) else { throw .invalidArgument }
        guard policy == .default || !policy.nodes.isEmpty else { throw .invalidArgument }
        var mask = [UInt](repeating: 0, count: maskWords)
        for node in policy.nodes { mask[node / 64] |= 1 << UInt(node % 64) }
        // maxnode counts one past the last bit, as the kernel's get_nodes expects.
        let maximumNode = policy == .default ? 0 : UInt(maskWords * 64 + 1)
        let result = mask.withUnsafeBufferPointer { words in
            mbind(address, UInt(length), policy.mode, policy == .default ? nil : words.baseAddress, maximumNode,
                  move.flags | (strict ? UInt32(MPOL_MF_STRICT) : 0))
        }
        guard result == 0 else { throw Errno(rawValue: errno) }
    }

    /// The node of each page of `[address, address + length)` as this process maps it, or a
    /// negative errno for a page that is not mapped here (`-ENOENT`) or cannot be queried.
    /// With `populate`, every page is first mapped (read, never written) so that each one is
    /// reported; pages never touched by anyone are allocated then, under the range's policy.
    /// The corresponding C function is `move_pages` with no target nodes (a query; nothing moves).
    public static func pageNodes(address: UnsafeMutableRawPointer, length: Int, pageSize: Int, populate: Bool)
        throws(Errno) -> [Int32]
    {
        guard isAvailable else { throw Errno.noFunction }
        if populate && length > 0 {
            guard cxpmem_populate_read(address, length) == 0 else { throw Errno(rawValue: errno) }
        }
        let count = (length + pageSize - 1) / pageSize
        var pages: [UnsafeMutableRawPointer?] = (0..<count).map { address + $0 * pageSize }
        var status = [Int32](repeating: 0, count: count)
        guard count > 0 else { return [] }
        let result = move_pages(0, UInt(count), &pages, nil, &status, 0)
        guard result == 0 else { throw Errno(rawValue: errno) }
        return status
    }

    /// Pages per node in a `pageNodes` answer; negative entries are counted under their errno.
    public static func histogram(_ pageNodes: [Int32]) -> [Int: Int] {
        pageNodes.reduce(into: [:]) { counts, node in counts[Int(node), default: 0] += 1 }
    }
}
