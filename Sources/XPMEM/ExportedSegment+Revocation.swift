import Synchronization
import XPMEMSystem

extension ExportedSegment {
    /// Revocation made real: once the segment is removed while this process lives on, its bytes move
    /// to private anonymous memory at the same addresses, so that a memfd an importer kept (ignoring
    /// `released`) aliases nothing live any more. With that descriptor it can still read the bytes as
    /// they were at the removal and write bytes nobody reads; it sees none of the exporter's later
    /// writes, and the exporter none of its writes.
    ///
    /// No other thread may write the segment meanwhile (such a write could be lost), as for
    /// `exportRange`. The pages land where first touch puts them; a placement is not kept.
    func makePagesPrivate() throws(XPMEMError) {
        guard let base = UnsafeMutableRawPointer(bitPattern: baseAddress) else { return }
        let copy: MemoryMapping
        do {
            copy = try MemoryMapping.anonymous(length: size)
        } catch {
            throw XPMEMError.system("mmap of a private copy of segment \(id)", error)
        }
        copy.bytes.copyMemory(from: UnsafeRawBufferPointer(bytes))
        let moved: UnsafeMutableRawBufferPointer
        do {
            moved = try copy.move(replacing: base).relinquish()
        } catch {
            throw XPMEMError.system("moving the private copy of segment \(id) in place", error)
        }
        state.withLock { state in
            // The memfd's mapping at `base` is gone, replaced: what the library owned there is now
            // the private copy; a caller's range (exportRange) stays the caller's.
            if let replaced = state.ownedMapping.take() {
                _ = replaced.relinquish()
                state.ownedMapping = MemoryMapping.adopting(moved)
            }
        }
    }
}
