import Synchronization
import SystemPackage
import XPMEMSystem
import XPMEMWire

/// The shared userfaultfd of one connection, when the kernel allows it.
final class UserFaultGate: Sendable {
    let descriptor: UserFaultDescriptor
    /// Whether read-only mappings can be made to block here, by page size (a hugetlb file's differ from a
    /// memfd's); learnt on the first read-only attachment of each.
    private let readOnlySupport = Mutex<[UInt64: Bool]>([:])

    init(_ descriptor: consuming UserFaultDescriptor) { self.descriptor = descriptor }

    /// Whether touches of a read-only mapping of `file` can be made to sleep. Asked of the kernel once
    /// per connection, so that an attachment's policy says the truth before its first invalidation.
    func blocksReadOnlyMappings(of file: borrowing OwnedDescriptor, fileOffset: Int) -> Bool {
        let pages = (try? FileFacts(of: file))?.pageSize ?? UInt64(pageSize)
        if let known = readOnlySupport.withLock({ $0[pages] }) { return known }
        let supported = descriptor.canSuspendReadOnlyAccess(to: file, fileOffset: fileOffset)
        readOnlySupport.withLock { $0[pages] = supported }
        return supported
    }
}

/// The mapping behind one attachment and its invalidation state, shared by the `Attachment`, its
/// grant and the event listener, so that a detach, a release or a revocation unmaps it exactly once.
final class AttachedRange: Sendable {
    /// The broker's number for this mapping and the connection generation that issued it (a new
    /// one after a reconnection re-registers the mapping).
    private let link: Mutex<(id: AttachmentID, generation: UInt64)>
    let segment: SegmentID
    let segmentOffset: Int
    let base: UInt
    let length: Int
    let protection: MemoryProtection
    let handlers: InvalidationHandlers
    private let gate: UserFaultGate?
    private let state: Mutex<State>

    private struct State: ~Copyable {
        var mapping: MemoryMapping?
        /// Kept to map the pages back at the end of a window that replaced them.
        var file: OwnedDescriptor?
        var windows = SuspendedWindows()
        var revoked = false
        /// Whether touches during a window sleep (`.block` in force) rather than fault.
        var blocks: Bool

        /// Mapped, with its file, and not revoked.
        ///
        /// The mapping is looked at with `!= nil` and `switch`, never with optional chaining: in a
        /// debug build, Swift 6.3.1 reads a noncopyable optional that was `take()`n through `?.` as if
        /// it still held its old value, so a detached range looked mapped, and `mapping?.…` would have
        /// remapped addresses this process had given back.
        var isUsable: Bool { !revoked && mapping != nil }

        /// Makes part of the mapping an inaccessible reservation, if it is still mapped.
        func reserve(offset: Int, length: Int) {
            switch mapping {
            case .some(let mapping): try? mapping.replaceWithReservation(offset: offset, length: length)
            case .none: break
            }
        }

        /// Maps the file back over part of the mapping; returns whether it could.
        mutating func restore(fileOffset: Int, offset: Int, length: Int, protection: MemoryProtection) -> Bool {
            switch file {
            case .some(let descriptor):
                switch mapping {
                case .some(let mapping):
                    do throws(Errno) {
                        try mapping.restoreFile(descriptor, fileOffset: fileOffset, offset: offset, length: length,
                                                protection: protection)
                        return true
                    } catch {
                        return false
                    }
                case .none:
                    return false
                }
            case .none:
                return false
            }
        }
    }

    init(id: AttachmentID, generation: UInt64, segment: SegmentID, segmentOffset: Int, mapping: consuming MemoryMapping,
         file: consuming OwnedDescriptor, protection: MemoryProtection, policy: AccessPolicy,
         handlers: InvalidationHandlers, gate: UserFaultGate?) {
        link = Mutex((id, generation))
        self.segment = segment
        self.segmentOffset = segmentOffset
        base = UInt(bitPattern: mapping.base)
        length = mapping.length
        self.protection = protection
        self.handlers = handlers
        self.gate = gate
        var blocks = false
        if policy == .block, let gate {
            // A writable mapping is registered in place; a read-only one needs the private view, which
            // the kernel is asked about once.
            blocks = protection.contains(.write)
                || gate.blocksReadOnlyMappings(of: file, fileOffset: segmentOffset)
        }
        state = Mutex(State(mapping: .some(mapping), file: .some(file), blocks: blocks))
    }

    /// The broker's current number for this mapping.
    var id: AttachmentID { link.withLock { $0.id } }

    /// The broker's number for this mapping and the generation of the connection that issued it.
    var brokerLink: (id: AttachmentID, generation: UInt64) { link.withLock { $0 } }

    /// The mapping was registered again, with a broker that restarted.
    func rebind(_ id: AttachmentID, generation: UInt64) { link.withLock { $0 = (id, generation) } }

    /// Whether `file` is the very file this range maps (a re-registration must find the same pages).
    func maps(sameFileAs other: borrowing OwnedDescriptor) -> Bool {
        state.withLock { state in
            switch state.file {
            case .some(let file):
                guard let mine = try? FileFacts(of: file), let theirs = try? FileFacts(of: other) else { return false }
                return mine.isSameFile(as: theirs)
            case .none:
                return false
            }
        }
    }

    /// The policy in force: `.block` only while touches during a window really sleep.
    var policy: AccessPolicy { state.withLock { $0.blocks ? .block : .revoke } }

    var isMapped: Bool { state.withLock { state in state.mapping != nil } }

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
        let suspended: [SuspendedWindows.Part]? = state.withLock { state in
            guard let mapping = state.mapping.take() else { return nil }
            mapping.unmap()
            _ = state.file.take()
            return state.windows.closeAll().parts
        }
        guard let suspended else { return false }
        wakeSleepers(suspended)
        return true
    }

    /// Cuts access to the window `notice` describes (attachment coordinates) according to the policy,
    /// recording how, for `resume`.
    func suspend(_ notice: InvalidationNotice) {
        state.withLock { state in
            guard state.isUsable else { return }
            // Taken out while the closure changes the rest of the state: moved, not copied, so nothing
            // is copied on write.
            var windows = state.windows.take()
            windows.open(notice) { offset, length in cutAccess(offset: offset, length: length, in: &state) }
            state.windows = windows
        }
    }

    /// Ends window `sequence`: gives back access to the parts no other window still covers, undoing
    /// exactly what cut them. Returns the window as `suspend` was told it, if it was open.
    func resume(sequence: UInt64) -> InvalidationNotice? {
        state.withLock { state in
            guard state.isUsable else { return nil }
            var windows = state.windows.take()
            let notice = windows.close(sequence) { part in giveBack(part, in: &state) }
            state.windows = windows
            return notice
        }
    }

    /// Ends every open window at once (no `end` will come: the broker is gone), giving access back with
    /// the file mapped; returns the windows that were open, by sequence.
    func endAllWindows() -> [InvalidationNotice] {
        state.withLock { state in
            guard state.isUsable else { return [] }
            let (notices, parts) = state.windows.closeAll()
            for part in parts { giveBack(part, in: &state) }
            return notices
        }
    }

    /// Whether any invalidation window is open on this attachment.
    var hasOpenWindows: Bool { state.withLock { !$0.windows.isEmpty } }

    /// The segment is gone for this importer: the whole mapping becomes an inaccessible reservation
    /// (the addresses stay taken until detach), and sleepers wake to fault.
    func revoke() {
        let suspended: [SuspendedWindows.Part] = state.withLock { state in
            guard state.isUsable else { return [] }
            state.revoked = true
            state.reserve(offset: 0, length: length)
            _ = state.file.take()
            return state.windows.closeAll().parts
        }
        wakeSleepers(suspended)
    }

    /// The exporter moved the segment to a fresh file (after revoking an importer that missed a
    /// deadline): the parts of the mapping whose access is not cut map `file` at once, the parts an
    /// open window cuts map it when the window ends. A part that cannot be mapped again is made to
    /// fault rather than show the old file's bytes, which nobody updates any more.
    func replaceFile(_ file: consuming OwnedDescriptor) {
        var fresh = Optional(file)
        state.withLock { state in
            guard state.isUsable else { return }
            state.file = fresh.take()
            for uncut in state.windows.uncutRanges(within: length) {
                if !state.restore(fileOffset: segmentOffset + uncut.offset, offset: uncut.offset, length: uncut.length,
                                  protection: protection) {
                    state.reserve(offset: uncut.offset, length: uncut.length)
                }
            }
            state.windows.markCutPartsMappingOldFile()
        }
    }

    /// Makes touches of one range sleep if the policy and the kernel allow, else fault.
    private func cutAccess(offset: Int, length count: Int, in state: inout State) -> AccessCut {
        if state.blocks, let gate {
            let address = address(at: offset)
            do throws(Errno) {
                if protection.contains(.write) {
                    try gate.descriptor.suspendAccess(at: address, length: count)
                    return .sleepOnSharedMapping
                }
                switch state.file {
                case .some(let file):
                    try gate.descriptor.suspendReadOnlyAccess(at: address, length: count, file: file,
                                                              fileOffset: segmentOffset + offset)
                    return .sleepOnPrivateView
                case .none:
                    break
                }
            } catch {
                // The kernel would not make touches sleep. The reservation below replaces whatever a
                // half-done attempt left, and the policy says `.revoke` from now on, which is what
                // touches will get.
                state.blocks = false
            }
        }
        state.reserve(offset: offset, length: count)
        return .reservation
    }

    /// Gives back access to one part of a window that ended, undoing the way it was cut, and wakes the
    /// threads that slept on it.
    private func giveBack(_ part: SuspendedWindows.Part, in state: inout State) {
        let address = address(at: part.offset)
        switch (part.cut, gate) {
        case (.sleepOnSharedMapping, let gate?) where !part.mapsOldFile:
            do throws(Errno) {
                try gate.descriptor.resumeAccess(at: address, length: part.length)
                return
            } catch {
                // Mapping the file back below also ends the registration.
            }
        case (.sleepOnPrivateView, let gate?):
            switch state.file {
            case .some(let file):
                do throws(Errno) {
                    try gate.descriptor.resumeReadOnlyAccess(at: address, length: part.length, file: file,
                                                             fileOffset: segmentOffset + part.offset)
                    return
                } catch {
                    // Tried once more below, and made to fault if that fails too.
                }
            case .none:
                break
            }
        case (.reservation, _), (.sleepOnSharedMapping, _), (.sleepOnPrivateView, nil):
            // A shared mapping cut while the segment moved maps the old file: mapped again below.
            break
        }
        if !state.restore(fileOffset: segmentOffset + part.offset, offset: part.offset, length: part.length,
                          protection: protection) {
            // Without the file mapped back, woken sleepers would only fall asleep again: make them fault.
            state.reserve(offset: part.offset, length: part.length)
        }
        try? gate?.descriptor.wake(at: address, length: part.length)
    }

    private func wakeSleepers(_ parts: [SuspendedWindows.Part]) {
        guard let gate else { return }
        for part in parts {
            try? gate.descriptor.wake(at: address(at: part.offset), length: part.length)
        }
    }

    private func address(at offset: Int) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: base + UInt(offset))!
    }
}
