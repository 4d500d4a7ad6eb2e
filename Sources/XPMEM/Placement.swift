import XPMEMSystem

/// Where a segment's pages go (through libnuma and `mbind`). The policy is set on the segment's
/// memfd **before any page exists**, as a shared policy of the file, so it governs every fault of
/// every process that maps it — importers included.
public enum Placement: Sendable, Equatable, CustomStringConvertible {
    /// No policy: each page lands where it is first touched (the kernel's default).
    case firstTouch
    /// On the node of the CPU the exporter runs on when it makes the segment.
    case local
    /// Only on node `n` (`MPOL_BIND`).
    case node(Int)
    /// Page by page round-robin over these nodes (`MPOL_INTERLEAVE`).
    case interleave([Int])
    /// On node `n` while it has free memory, then elsewhere (`MPOL_PREFERRED`).
    case preferred(Int)
    /// Starts like `.local`; `ExportedSegment.followImporters()` then migrates the pages to the node
    /// where most of the segment's attached bytes are used (the broker learns each client's node
    /// from the CPU it runs on when it connects). Applied by migration, when the exporter asks.
    case nearImporters

    public var description: String {
        switch self {
        case .firstTouch: "first-touch"
        case .local: "local"
        case .node(let node): "node \(node)"
        case .interleave(let nodes): "interleave \(nodes.map(String.init).joined(separator: ","))"
        case .preferred(let node): "preferred \(node)"
        case .nearImporters: "near-importers"
        }
    }

    /// Parses what `description` prints (and `xpmemctl`/`share` take): "node 1", "interleave 0,1", ...
    public init?(_ text: String) {
        let words = text.split(separator: " ", maxSplits: 1).map(String.init)
        switch (words.first, words.count) {
        case ("first-touch", 1): self = .firstTouch
        case ("local", 1): self = .local
        case ("near-importers", 1): self = .nearImporters
        case ("node", 2): guard let node = Int(words[1]) else { return nil }; self = .node(node)
        case ("preferred", 2): guard let node = Int(words[1]) else { return nil }; self = .preferred(node)
        case ("interleave", 2):
            let nodes = words[1].split(separator: ",", omittingEmptySubsequences: false).map { Int($0) }
            guard !nodes.isEmpty, nodes.allSatisfy({ $0 != nil }) else { return nil }
            self = .interleave(nodes.compactMap { $0 })
        default: return nil
        }
    }

    /// The kernel policy this placement means here and now (`.local` resolves to the current node).
    func kernelPolicy() throws(XPMEMError) -> NUMA.Policy {
        switch self {
        case .firstTouch: return .default
        case .local, .nearImporters:
            guard let node = NUMA.currentNode else {
                throw XPMEMError(.systemCallFailed, "cannot tell which NUMA node this thread runs on")
            }
            return .bind([node])
        case .node(let node): return .bind([node])
        case .interleave(let nodes): return .interleave(nodes)
        case .preferred(let node): return .preferred(node)
        }
    }

    /// Applies the placement to a fresh mapping of a segment's memfd, before any page exists.
    func apply(to base: UnsafeMutableRawPointer, length: Int) throws(XPMEMError) {
        guard self != .firstTouch else { return }
        guard NUMA.isAvailable else {
            throw XPMEMError(.invalidArgument, "placement \(self) needs NUMA support, which this kernel lacks")
        }
        let policy = try kernelPolicy()
        try Self.checkNodes(policy.nodes)
        do {
            try NUMA.setPolicy(policy, address: base, length: length)
        } catch {
            throw XPMEMError.system("mbind for placement \(self)", error)
        }
    }

    /// A clear error for a node this machine does not have.
    static func checkNodes(_ nodes: [Int]) throws(XPMEMError) {
        let existing = NUMA.nodes
        for node in nodes where !existing.contains(node) {
            throw XPMEMError(.invalidArgument,
                "NUMA node \(node) does not exist; this machine's nodes are \(existing.map(String.init).joined(separator: ", "))")
        }
    }
}
