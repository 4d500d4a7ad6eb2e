import CXPMEMShim

/// Loads, stores and a clock for watching memory that another process writes: the compiler may not
/// cache or reorder these accesses away, and the clock is the same in every process.
public enum SharedMemoryAccess {
    public static func load(_ address: UnsafeRawPointer) -> UInt64 { cxpmem_volatile_load64(address) }
    public static func store(_ value: UInt64, to address: UnsafeMutableRawPointer) { cxpmem_volatile_store64(address, value) }
    /// `CLOCK_MONOTONIC` in nanoseconds.
    public static func monotonicNanoseconds() -> UInt64 { cxpmem_monotonic_nanoseconds() }
}
