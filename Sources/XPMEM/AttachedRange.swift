import Synchronization
import SystemPackage
import XPMEMSystem
import XPMEMWire

/// The shared userfaultfd of one connection, when the kernel allows it.
final class UserFaultGate: Sendable {
    let descriptor: UserFaultDescriptor
    init(_ descriptor: consuming UserFaultDescriptor) { self.descriptor = descriptor }
}

/// The mapping behind one attachment and its invalidation state, shared by the `Attachment`, its
/// grant and the event listener, so that a detach, a release or a revocation unmaps it exactly once.
final class AttachedRange: Sendable {
    let id: AttachmentID
    let segment: SegmentID
    let segmentOffset: Int
    let base: UInt
    let length: Int
    let protection: MemoryProtection
    let policy: AccessPolicy
    let handlers: InvalidationHandlers
    private let gate: UserFaultGate?
    private let state: Mutex<State>

    private struct State: ~Copyable {
        var mapping: MemoryMapping?
        /// Kept to map the pages back after a `.revoke` window.
        var file: OwnedDescriptor?
        /// Ranges (offset, length within the attachment) cut by in-flight invalidations, by sequence.
        var suspended: [UInt64: (Int, Int)] = [:]
        var revoked = false

        /// Mapped, with its file, and not revoked.
        var isUsable: Bool { mutating get { !revoked && mapping?.length != nil } }

        /// Maps the file back over part of the mapping.
        mutating func restore(fileOffset: Int, offset: Int, length: Int, protection: MemoryProtection) {
            switch file {
            case .some(let descriptor):
                try? mapping?.restoreFile(descriptor, fileOffset: fileOffset, offset: offset, length: length,
                                          protection: protection)
            case .none:
                break
            }
        }
    }

    init(id: AttachmentID, segment: SegmentID, segmentOffset: Int, mapping: consuming MemoryMapping,
         file: consuming OwnedDescriptor, protection: MemoryProtection, policy: AccessPolicy,
         handlers: InvalidationHandlers, gate: UserFaultGate?) {
        self.id = id
        self.segment = segment
        self.segmentOffset = segmentOffset
        base = UInt(bitPattern: mapping.base)
        length = mapping.length
        self.protection = protection
        self.policy = gate == nil ? .revoke : policy
        self.handlers = handlers
        self.gate = gate
        state = Mutex(State(mapping: .some(mapping), file: .some(file)))
    }

    var isMapped: Bool { state.withLock { state in state.mapping?.length != nil } }

    /// The part of the segment range `offset..<offset+length` this attachment maps, in attachment
    /// coordinates; nil when they do not overlap.
    func overlap(segmentOffset offset: UInt64, length count: UInt64) -> (offset: Int, length: Int)? {
        let start = max(UInt64(segmentOffset), offset)
        let end = min(UInt64(segmentOffset + length), offset &+ count)
        guard start < end else { return nil }
        return (Int(start) - segmentOffset, Int(end - start))
    }

    /// Unmaps if still mapped; returns whether it was. Threads asleep on a suspended range are woken
    /// afterwards, and then fault on the unmapped addresses.
    @discardableResult
    func unmap() -> Bool {
        let suspended: [(Int, Int)]? = state.withLock { state in
            guard let mapping = state.mapping.take() else { return nil }
            mapping.unmap()
            _ = state.file.take()
            defer { state.suspended.removeAll() }
            return Array(state.suspended.values)
        }
        guard let suspended else { return false }
        wakeSleepers(suspended)
        return true
    }

    /// Cuts access to the overlap for invalidation `sequence` according to the policy.
    func suspend(sequence: UInt64, offset: Int, length count: Int) {
        state.withLock { state in
            guard state.isUsable else { return }
            let address = UnsafeMutableRawPointer(bitPattern: base + UInt(offset))!
            do throws(Errno) {
                if policy == .block, let gate {
                    try gate.descriptor.suspendAccess(at: address, length: count)
                } else {
                    try state.mapping?.replaceWithReservation(offset: offset, length: count)
                }
            } catch {
                // Could not cut access the gentle way: make the range inaccessible instead.
                try? state.mapping?.replaceWithReservation(offset: offset, length: count)
            }
            state.suspended[sequence] = (offset, count)
        }
    }

    /// Gives back access cut for `sequence`; returns the range if there was one.
    func resume(sequence: UInt64) -> (offset: Int, length: Int)? {
        state.withLock { state in
            guard state.isUsable, let (offset, count) = state.suspended.removeValue(forKey: sequence) else { return nil }
            let address = UnsafeMutableRawPointer(bitPattern: base + UInt(offset))!
            if policy == .block, let gate {
                do throws(Errno) {
                    try gate.descriptor.resumeAccess(at: address, length: count)
                    return (offset, count)
                } catch {
                    // Fall through: remapping the file also ends the userfaultfd registration.
                }
            }
            state.restore(fileOffset: segmentOffset + offset, offset: offset, length: count, protection: protection)
            gate.map { try? $0.descriptor.wake(at: address, length: count) }
            return (offset, count)
        }
    }

    /// The segment is gone for this importer: the whole mapping becomes an inaccessible reservation
    /// (the addresses stay taken until detach), and sleepers wake to fault.
    func revoke() {
        let suspended: [(Int, Int)] = state.withLock { state in
            guard state.isUsable else { return [] }
            state.revoked = true
            try? state.mapping?.replaceWithReservation(offset: 0, length: length)
            _ = state.file.take()
            defer { state.suspended.removeAll() }
            return Array(state.suspended.values)
        }
        wakeSleepers(suspended)
    }

    private func wakeSleepers(_ ranges: [(Int, Int)]) {
        guard let gate else { return }
        for (offset, count) in ranges {
            try? gate.descriptor.wake(at: UnsafeMutableRawPointer(bitPattern: base + UInt(offset))!, length: count)
        }
    }
}
