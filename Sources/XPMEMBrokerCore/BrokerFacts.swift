/// What the core reports about the broker itself but cannot know without I/O: its pid, how many
/// descriptors it has open, the machine's NUMA nodes. The daemon supplies the real ones; tests supply
/// fixed ones.
public struct BrokerFacts: Sendable {
    public var brokerPID: Int32
    public var numaNodes: UInt32
    public var openDescriptorCount: @Sendable () -> Int

    public init(brokerPID: Int32, numaNodes: UInt32, openDescriptorCount: @escaping @Sendable () -> Int) {
        self.brokerPID = brokerPID
        self.numaNodes = numaNodes
        self.openDescriptorCount = openDescriptorCount
    }
}
