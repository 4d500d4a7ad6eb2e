import Synchronization

/// A 64-bit word in memory that other processes map, read and written with acquire/release atomics.
///
/// The word is an `Atomic<UInt64>` placed in the shared mapping: the layout of `Atomic<UInt64>` is a
/// plain aligned `UInt64`, a freshly created memfd reads as zero, and the atomic instructions work
/// across processes just as across threads. Release stores publish every ordinary store made
/// before them (a ring slot's payload, say); acquire loads make those stores visible to the reader.
struct SharedWord: @unchecked Sendable {
    private let word: UnsafeMutablePointer<Atomic<UInt64>>

    /// `address` must be 8-byte aligned and stay mapped while this value is used.
    init(_ address: UnsafeMutableRawPointer) {
        precondition(Int(bitPattern: address) % 8 == 0, "a shared word must be 8-byte aligned")
        word = address.assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    func load() -> UInt64 { word.pointee.load(ordering: .acquiring) }
    func store(_ value: UInt64) { word.pointee.store(value, ordering: .releasing) }
    /// Adds and returns the new value.
    @discardableResult
    func add(_ value: UInt64) -> UInt64 { word.pointee.add(value, ordering: .acquiringAndReleasing).newValue }
}
