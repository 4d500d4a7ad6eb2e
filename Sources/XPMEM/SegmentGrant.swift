import Synchronization
import SystemPackage
import XPMEMSystem
import XPMEMWire

/// The right to attach one segment (XPMEM's `apid`), obtained with `XPMEMBroker.get`.
///
/// Valid only through the connection that obtained it. Released by `release()` or when this object
/// goes away; releasing unmaps every attachment made through it. When the broker restarts, the
/// library gets it again from the new broker (and re-registers its attachments), under a new handle.
public final class SegmentGrant: Sendable {
    public let broker: XPMEMBroker
    public let segment: SegmentID
    /// The segment's size in bytes.
    public let size: Int
    public let access: AccessMode
    private let state: Mutex<State>

    private struct State {
        var released = false
        var attachments: [ObjectIdentifier: AttachedRange] = [:]
        /// The broker's handle and the connection generation that issued it; nil once restoring it
        /// was given up.
        var link: (handle: AccessHandle, generation: UInt64)?
        /// The last handle the broker issued.
        var lastHandle: AccessHandle
    }

    init(broker: XPMEMBroker, segment: SegmentID, handle: AccessHandle, generation: UInt64, size: Int, access: AccessMode) {
        self.broker = broker
        self.segment = segment
        self.size = size
        self.access = access
        state = Mutex(State(link: (handle, generation), lastHandle: handle))
    }

    /// The broker's handle for this grant (a new one after a reconnection obtained it again).
    public var handle: AccessHandle { state.withLock { $0.lastHandle } }

    /// Maps `length` bytes of the segment from `offset` (XPMEM's `attach`).
    /// - Parameters:
    ///   - offset: page-aligned start within the segment.
    ///   - length: page-aligned length; nil means to the end of the segment.
    ///   - address: where to map it, page-aligned and currently unmapped; nil lets the kernel choose.
    ///   - policy: what touches do while the exporter invalidates the range (see `AccessPolicy`);
    ///     `attachment.policy` says which one is in force.
    ///   - handlers: callbacks run on the library's event thread around invalidations.
    /// - Throws: `invalidArgument` for a range outside the segment, unaligned values or an address in
    ///   use; `notFound` when the segment was removed or this grant released; `brokerUnavailable`
    ///   while the broker is gone, or after it restarted until this grant is obtained again.
    public func attach(
        offset: Int = 0, length: Int? = nil, at address: UnsafeMutableRawPointer? = nil,
        policy: AccessPolicy = .block, handlers: InvalidationHandlers = InvalidationHandlers()
    ) throws(XPMEMError) -> Attachment {
        let length = length ?? (size - offset)
        guard offset >= 0, length > 0 else {
            throw XPMEMError(.invalidArgument, "offset \(offset) and length \(length) must be non-negative and positive")
        }
        guard offset <= size, length <= size - offset else {
            throw XPMEMError(.invalidArgument, "offset \(offset) + length \(length) is beyond the segment's \(size) bytes")
        }
        if let address, !isPageAligned(Int(bitPattern: address)) {
            throw XPMEMError(.invalidArgument, "attach address \(address) is not page-aligned")
        }
        guard let (handle, generation) = state.withLock({ $0.link }) else {
            throw XPMEMError(.brokerUnavailable, "the grant of segment \(segment) was not obtained again after the broker restarted")
        }
        // Invalidation events must be able to reach this mapping from the moment it exists.
        let events = try broker.subscription(generation: generation)
        for _ in 0..<Self.attachAttempts {
            if let range = try attachOnce(handle: handle, generation: generation, table: events.table, offset: offset,
                                          length: length, at: address, policy: policy, handlers: handlers) {
                return Attachment(grant: self, range: range)
            }
        }
        throw XPMEMError(.resourceExhausted,
                         "segment \(segment) changed \(Self.attachAttempts) times while attaching it; try again")
    }

    /// How often an attach asks again when events for its range keep coming while it is in flight.
    private static let attachAttempts = 1000

    /// One request and its mapping, in the table; nil when an event for the range came while the
    /// answer was on its way (see `AttachesInFlight`): the mapping is gone again, ask once more.
    private func attachOnce(
        handle: AccessHandle, generation: UInt64, table: AttachmentTable, offset: Int, length: Int,
        at address: UnsafeMutableRawPointer?, policy: AccessPolicy, handlers: InvalidationHandlers
    ) throws(XPMEMError) -> AttachedRange? {
        let ticket = table.startAttach(of: segment, range: UInt64(offset)..<UInt64(offset + length))
        var inFlight = true
        defer { if inFlight { _ = table.finishAttach(ticket, inserting: nil) } }
        let message = Message.attach(handle, offset: UInt64(offset), length: UInt64(length))
        let reply = try broker.channel.request(message, generation: generation)
        guard case .attached(let id) = reply.message, let file = reply.descriptors.takeFirst() else {
            throw BrokerChannel.unexpected(reply.message, for: message)
        }
        let protection: MemoryProtection = access == .readWrite ? .readWrite : .read
        let mapping: MemoryMapping
        do {
            mapping = try MemoryMapping.mapShared(file, offset: offset, length: length, protection: protection,
                                                  placement: address.map { .exactlyIfFree($0) } ?? .anywhere)
            // The exporter's huge pages, mapped here with one entry each too (its file's name says).
            try? HugePages.of(file).advise(mapping.base, length: length)
        } catch {
            _ = try? broker.channel.request(.detach(id), generation: generation)
            if error == .fileExists {
                throw XPMEMError(.invalidArgument, "address \(address!) is already in use", errno: error)
            }
            throw XPMEMError.system("mmap of the segment", error)
        }
        let range = AttachedRange(id: id, generation: generation, segment: segment, segmentOffset: offset,
                                  mapping: mapping, file: file, protection: protection, policy: policy,
                                  handlers: handlers, gate: broker.userFaultGate())
        let accepted = state.withLock { state in
            if state.released { return false }
            state.attachments[ObjectIdentifier(range)] = range
            return true
        }
        guard accepted else {
            range.unmap()
            throw XPMEMError(.alreadyClosed, "\(handle) was released while attaching")
        }
        inFlight = false
        guard let windows = table.finishAttach(ticket, inserting: range) else { return range }
        // No event and nobody else has seen this mapping: undone as a detach would, then asked for
        // again once the windows that sent it back are over (an attach sent into one would wait at
        // the broker, holding the connection).
        range.unmap()
        _ = forget(range)
        let link = range.brokerLink
        _ = try? broker.channel.request(.detach(link.id), generation: link.generation)
        table.waitForEnd(of: windows)
        return nil
    }

    /// Gives up the handle (XPMEM's `release`), unmapping every attachment made through it. Idempotent.
    /// While the broker is gone there is nobody to tell: the grant is released here only.
    public func release() throws(XPMEMError) {
        let taken: ([AttachedRange], (handle: AccessHandle, generation: UInt64)?)? = state.withLock { state in
            if state.released { return nil }
            state.released = true
            defer { state.attachments.removeAll() }
            return (Array(state.attachments.values), state.link)
        }
        guard let (ranges, link) = taken else { return }
        for range in ranges {
            range.unmap()
            broker.eventTable.remove(range)
        }
        guard let (handle, generation) = link else { return }
        do throws(XPMEMError) {
            let reply = try broker.channel.request(.release(handle), generation: generation)
            guard case .done = reply.message else { throw BrokerChannel.unexpected(reply.message, for: .release(handle)) }
        } catch let error where error.code == .brokerUnavailable {
            _ = error
            // The broker that issued the handle is gone, and took the grant with it.
        }
    }

    /// Called by `Attachment.detach`: forgets the range; true if it was this grant's.
    func forget(_ range: AttachedRange) -> Bool {
        broker.eventTable.remove(range)
        return state.withLock { $0.attachments.removeValue(forKey: ObjectIdentifier(range)) != nil }
    }

    deinit { try? release() }

    // MARK: Reconnection

    /// Whether this grant still needs to be obtained from the broker of `generation`.
    func needsRestoring(for generation: UInt64) -> Bool {
        state.withLock { state in
            guard !state.released, let link = state.link else { return false }
            return link.generation != generation
        }
    }

    /// Gets the segment again on `channel` (generation `generation`, maybe not installed yet) and
    /// re-registers every attachment still mapped; returns how many. Throws what the broker answered
    /// (`notFound` while the segment's exporter has not registered it again), or `protocolError`
    /// when what came back under the id is not the segment mapped here (another size or file).
    func restore(on channel: BrokerChannel, generation: UInt64, installed: Bool) throws(XPMEMError) -> Int {
        let bound: UInt64? = installed ? generation : nil
        let message = Message.get(segment, access)
        let reply = try channel.request(message, generation: bound)
        guard case .granted(let handle, let size, let granted) = reply.message, granted == access else {
            throw BrokerChannel.unexpected(reply.message, for: message)
        }
        guard size == UInt64(self.size) else {
            try? channel.requestDone(.release(handle))
            throw XPMEMError(.protocolError, "segment \(segment) came back with \(size) bytes instead of \(self.size)")
        }
        let ranges = state.withLock { Array($0.attachments.values) }.sorted { $0.id.rawValue < $1.id.rawValue }
        var restored = 0
        for range in ranges where range.isMapped {
            let attach = Message.attach(handle, offset: UInt64(range.segmentOffset), length: UInt64(range.length))
            let reply = try channel.request(attach, generation: bound)
            guard case .attached(let id) = reply.message, let file = reply.descriptors.takeFirst() else {
                throw BrokerChannel.unexpected(reply.message, for: attach)
            }
            // The importer keeps mapping the file it has; the broker's new descriptor must be that
            // very file, or the segment that came back under this id is not the one mapped here.
            guard range.maps(sameFileAs: file) else {
                try? channel.requestDone(.release(handle))
                throw XPMEMError(.protocolError, "segment \(segment) came back backed by another file than the one mapped here")
            }
            range.rebind(id, generation: generation)
            restored += 1
        }
        let keep = state.withLock { state in
            guard !state.released else { return false }
            state.link = (handle, generation)
            state.lastHandle = handle
            return true
        }
        if !keep { try? channel.requestDone(.release(handle)) }
        return restored
    }

    /// Restoring failed for good: no invalidation will reach this grant's mappings (they stay usable).
    func abandon() { state.withLock { $0.link = nil } }
}

extension XPMEMBroker {
    /// Asks for access to a segment (XPMEM's `get`); the broker checks the segment's mode bits against
    /// this process's uid and groups.
    /// - Throws: `notFound` for an unknown or removed segment, `permissionDenied` when the mode bits
    ///   do not allow `access`.
    public func get(_ segment: SegmentID, access: AccessMode = .readWrite) throws(XPMEMError) -> SegmentGrant {
        let message = Message.get(segment, access)
        let generation = channel.generation
        let reply = try channel.request(message, generation: generation)
        guard case .granted(let handle, let size, let granted) = reply.message, granted == access,
              size <= UInt64(Int.max)
        else { throw BrokerChannel.unexpected(reply.message, for: message) }
        let grant = SegmentGrant(broker: self, segment: segment, handle: handle, generation: generation, size: Int(size),
                                 access: access)
        track(grant)
        return grant
    }
}
