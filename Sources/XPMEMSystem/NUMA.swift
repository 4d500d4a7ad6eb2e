@preconcurrency import CNuma

/// What libnuma reports about this machine.
public enum NUMA {
    /// Whether the kernel supports the NUMA API (libnuma's `numa_available()`).
    public static var isAvailable: Bool { numa_available() >= 0 }

    /// The number of configured NUMA nodes (1 when NUMA is unavailable).
    public static var configuredNodes: Int { isAvailable ? Int(numa_num_configured_nodes()) : 1 }
}
