import Synchronization
import SystemPackage
import XPMEMSystem
import XPMEMWire

/// The right to attach one segment (XPMEM's `apid`), obtained with `XPMEMBroker.get`.
///
/// Valid only through the connection that obtained it. Released by `release()` or when this object
/// goes away; releasing unmaps every attachment made through it.
public final class SegmentGrant: Sendable {
    public let broker: XPMEMBroker
    public let segment: SegmentID
    public let handle: AccessHandle
    /// The segment's size in bytes.
    public let size: Int
    public let access: AccessMode
    private let state = Mutex(State())

    private struct State {
        var released = false
        var attachments: [AttachmentID: AttachedRange] = [:]
    }

    init(broker: XPMEMBroker, segment: SegmentID, handle: AccessHandle, size: Int, access: AccessMode) {
        self.broker = broker
        self.segment = segment
        self.handle = handle
        self.size = size
        self.access = access
    }

    /// Maps `length` bytes of the segment from `offset` (XPMEM's `attach`).
    /// - Parameters:
    ///   - offset: page-aligned start within the segment.
    ///   - length: page-aligned length; nil means to the end of the segment.
    ///   - address: where to map it, page-aligned and currently unmapped; nil lets the kernel choose.
    ///   - policy: what touches do while the exporter invalidates the range (see `AccessPolicy`);
    ///     `attachment.policy` says which one is in force.
    ///   - handlers: callbacks run on the library's event thread around invalidations.
    /// - Throws: `invalidArgument` for a range outside the segment, unaligned values or an address in
    ///   use; `notFound` when the segment was removed or this grant released.
    public func attach(
        offset: Int = 0, length: Int? = nil, at address: UnsafeMutableRawPointer? = nil,
        policy: AccessPolicy = .block, handlers: InvalidationHandlers = InvalidationHandlers()
    ) throws(XPMEMError) -> Attachment {
        let length = length ?? (size - offset)
        guard offset >= 0, length > 0 else {
            throw XPMEMError(.invalidArgument, "offset \(offset) and length \(length) must be non-negative and positive")
        }
        if let address, !isPageAligned(Int(bitPattern: address)) {
            throw XPMEMError(.invalidArgument, "attach address \(address) is not page-aligned")
        }
        // Invalidation events must be able to reach this mapping from the moment it exists.
        let events = try broker.subscription()
        let message = Message.attach(handle, offset: UInt64(offset), length: UInt64(length))
        let reply = try broker.channel.request(message)
        guard case .attached(let id) = reply.message, let file = reply.descriptors.takeFirst() else {
            throw BrokerChannel.unexpected(reply.message, for: message)
        }
        let protection: MemoryProtection = access == .readWrite ? .readWrite : .read
        let mapping: MemoryMapping
        do {
            mapping = try MemoryMapping.mapShared(file, offset: offset, length: length, protection: protection,
                                                  placement: address.map { .exactlyIfFree($0) } ?? .anywhere)
        } catch {
            try? broker.channel.requestDone(.detach(id))
            if error == .fileExists {
                throw XPMEMError(.invalidArgument, "address \(address!) is already in use", errno: error)
            }
            throw XPMEMError.system("mmap of the segment", error)
        }
        let range = AttachedRange(id: id, segment: segment, segmentOffset: offset, mapping: mapping, file: file,
                                  protection: protection, policy: policy, handlers: handlers, gate: events.gate)
        let accepted = state.withLock { state in
            if state.released { return false }
            state.attachments[id] = range
            return true
        }
        guard accepted else {
            range.unmap()
            throw XPMEMError(.alreadyClosed, "\(handle) was released while attaching")
        }
        events.table.insert(range)
        return Attachment(grant: self, range: range)
    }

    /// Gives up the handle (XPMEM's `release`), unmapping every attachment made through it. Idempotent.
    public func release() throws(XPMEMError) {
        let ranges: [AttachedRange]? = state.withLock { state in
            if state.released { return nil }
            state.released = true
            defer { state.attachments.removeAll() }
            return Array(state.attachments.values)
        }
        guard let ranges else { return }
        for range in ranges {
            range.unmap()
            broker.attachmentTable?.remove(range.id)
        }
        try broker.channel.requestDone(.release(handle))
    }

    /// Called by `Attachment.detach`.
    func forget(_ attachment: AttachmentID) -> Bool {
        broker.attachmentTable?.remove(attachment)
        return state.withLock { $0.attachments.removeValue(forKey: attachment) != nil }
    }

    deinit { try? release() }
}

extension XPMEMBroker {
    /// Asks for access to a segment (XPMEM's `get`); the broker checks the segment's mode bits against
    /// this process's uid and groups.
    /// - Throws: `notFound` for an unknown or removed segment, `permissionDenied` when the mode bits
    ///   do not allow `access`.
    public func get(_ segment: SegmentID, access: AccessMode = .readWrite) throws(XPMEMError) -> SegmentGrant {
        let message = Message.get(segment, access)
        let reply = try channel.request(message)
        guard case .granted(let handle, let size, let granted) = reply.message, granted == access,
              size <= UInt64(Int.max)
        else { throw BrokerChannel.unexpected(reply.message, for: message) }
        return SegmentGrant(broker: self, segment: segment, handle: handle, size: Int(size), access: access)
    }
}
