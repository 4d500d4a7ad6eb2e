import Synchronization
import SystemPackage
import XPMEMSystem
import XPMEMWire

/// A range of this process's memory that others may get and attach (XPMEM's `make`).
///
/// The segment lives until `remove()` or until this object goes away; either way the exporter's own
/// memory stays mapped and usable. Its pages are a memfd's, so a `fork()` child now *shares* them with
/// the parent instead of getting a copy-on-write copy.
public final class ExportedSegment: Sendable {
    public let broker: XPMEMBroker
    public let id: SegmentID
    /// The size in bytes, a multiple of the page size.
    public let size: Int
    public let permit: Permit
    /// What pages it asked for at `makeSegment` (`pageBacking()` says what it got).
    public let hugePages: HugePages
    let baseAddress: UInt
    let name: String
    /// The secret its id stands for, to register it again with a restarted broker; nil when the
    /// broker predates `claim` (the segment then does not survive a restart of the broker).
    let reclaimToken: ReclaimToken?
    let state: Mutex<State>

    struct State: ~Copyable {
        var removed = false
        /// The connection generation on whose broker the segment is registered; nil once registering
        /// it again was refused.
        var generation: UInt64?
        /// The memfd, kept for later operations on the segment's pages.
        var file: OwnedDescriptor?
        /// Set when the library allocated the memory and so unmaps it when the segment goes.
        var ownedMapping: MemoryMapping?
        /// Where the pages are meant to be (changed by migration).
        var placement: Placement
        /// Sees this process's writes to pages hinted free; started by the first `hintFree`.
        var freePageTracker: FreePageTracker? = nil
        /// The segment is moving to a fresh file: no hint is taken meanwhile.
        var movingFile = false
        /// How many importers the last invalidation of this segment reached (nil before the first).
        var lastInvalidationImporters: Int? = nil
    }

    /// The segment's bytes in this process. Valid while this object lives (and, for `exportRange`, as
    /// long as the caller's range); keep it alive (`withExtendedLifetime`) or use `withUnsafeMutableBytes`.
    public var bytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: baseAddress), count: size)
    }

    /// Runs `body` with the segment's bytes, keeping the segment alive meanwhile.
    @discardableResult
    public func withUnsafeMutableBytes<Result>(_ body: (UnsafeMutableRawBufferPointer) throws -> Result) rethrows -> Result {
        try withExtendedLifetime(self) { try body(bytes) }
    }

    fileprivate init(broker: XPMEMBroker, registration: XPMEMBroker.Registration, size: Int, permit: Permit, name: String,
                     baseAddress: UInt, file: consuming OwnedDescriptor, ownedMapping: consuming MemoryMapping?,
                     placement: Placement, hugePages: HugePages = .none) {
        self.broker = broker
        self.hugePages = hugePages
        self.id = registration.id
        self.reclaimToken = registration.token
        self.size = size
        self.permit = permit
        self.name = name
        self.baseAddress = baseAddress
        self.state = Mutex(State(generation: registration.generation, file: .some(file), ownedMapping: ownedMapping,
                                 placement: placement))
    }

    /// Withdraws the segment (XPMEM's `remove`): importers that map it first get to stop access
    /// (an invalidation of the whole segment with reason `.remove`, waiting up to `deadline`), then
    /// they are told it is released and their mappings become inaccessible. No new get or attach
    /// succeeds. The segment's bytes then become private memory of this process at the same
    /// addresses (`makePagesPrivate`): a descriptor an importer kept aliases nothing live. Idempotent.
    /// While the broker is gone, or before a restarted one has the segment again, it is removed here
    /// only: it will not be registered again.
    public func remove(deadline: Duration = .seconds(5)) throws(XPMEMError) {
        try withdraw(deadline: deadline, keepingBytes: true)
    }

    private func withdraw(deadline: Duration, keepingBytes: Bool) throws(XPMEMError) {
        let (registeredOn, tracker): (UInt64??, FreePageTracker?) = state.withLock { state in
            defer { state.removed = true }
            return (state.removed ? .none : .some(state.generation), state.freePageTracker.take())
        }
        // Stopped once the broker has forgotten the segment (and its hints), or, if it refused, after
        // telling it to forget the hints: until then, writes must still be reported.
        defer { tracker?.forgetHintsAndStop() }
        guard case .some(let generation) = registeredOn else { return }
        if let generation, generation == broker.channel.generation, broker.channel.isConnected {
            _ = try beginInvalidation(deadline: deadline, reason: .remove)
            try broker.channel.requestDone(.remove(id))
        }
        if keepingBytes {
            try makePagesPrivate()
            // The bytes are private now: the file's pages (a hugetlb segment's are the pool's) go as
            // soon as nobody else holds the file either.
            state.withLock { $0.file = nil }
        }
    }

    /// Memory the library allocated is unmapped right after, so only a caller's range (exportRange)
    /// needs its bytes made private.
    deinit { try? withdraw(deadline: .seconds(5), keepingBytes: state.withLock { $0.ownedMapping == nil }) }
}

extension XPMEMBroker {
    /// Allocates `size` bytes (rounded up to whole pages) of shared memory and exports them
    /// (XPMEM's `make` on fresh memory).
    /// - Parameters:
    ///   - permit: who may get it, as IPC mode bits (0o600: this user; 0o644: others read-only).
    ///   - name: shown in `xpmemctl segments`.
    ///   - placement: the NUMA nodes its pages go to, set before any page exists.
    ///   - hugePages: `.transparent` for 2 MiB shared-memory pages where the kernel allows them, or
    ///     `.hugeTLB` for pages of the machine's hugetlb pool (the size is then rounded up to whole huge
    ///     pages); either is refused, with what to change, where the machine does not offer it. See
    ///     `pageBacking()` for what the segment got.
    public func makeSegment(size: Int, permit: Permit = Permit(rawValue: 0o600), name: String = "",
                            placement: Placement = .firstTouch, hugePages: HugePages = .none) throws(XPMEMError)
        -> ExportedSegment
    {
        guard size > 0 else { throw XPMEMError(.invalidArgument, "a segment needs a positive size, not \(size)") }
        try hugePages.checkAvailable(size: size)
        let segmentPageSize = hugePages.pageSize
        let rounded = (size + segmentPageSize - 1) & ~(segmentPageSize - 1)
        let file = try Self.makeFile(name: name, size: rounded, hugePages: hugePages)
        let mapping: MemoryMapping
        do {
            // A hugetlb mapping reserves its pages from the pool here, so a pool that shrank or was
            // taken since the check fails now rather than at a later fault.
            mapping = try MemoryMapping.mapShared(file, length: rounded, protection: .readWrite)
        } catch {
            if hugePages == .hugeTLB, error == .noMemory {
                throw XPMEMError(.resourceExhausted, "the hugetlb pool cannot reserve \(rounded >> 20) MiB more (mmap: \(error))")
            }
            throw XPMEMError.system("mmap of \(rounded) bytes", error)
        }
        do {
            // Before any page exists, as the placement: the first faults decide the page size.
            try hugePages.advise(mapping.base, length: rounded)
        } catch {
            throw XPMEMError.system("madvise(MADV_HUGEPAGE) of \(rounded) bytes", error)
        }
        try placement.apply(to: mapping.base, length: rounded)
        if hugePages == .hugeTLB, placement != .firstTouch {
            // The reservation took pages from any node, but faults under this policy take them from its
            // nodes only: allocate them now, so that a node short of pool pages is an error here rather
            // than SIGBUS at someone's touch.
            do {
                try PageRange(base: mapping.base, length: rounded, pageSize: segmentPageSize).allocateEveryPage()
            } catch {
                throw XPMEMError(.resourceExhausted,
                    "the hugetlb pool cannot back \(rounded >> 20) MiB with placement \(placement) (\(error)); /sys/devices/system/node/nodeN/hugepages/ sizes each node's pool")
            }
        }
        let registration = try register(file, size: rounded, permit: permit, name: name, placement: placement)
        let base = UInt(bitPattern: mapping.base)
        let segment = track(ExportedSegment(broker: self, registration: registration, size: rounded, permit: permit,
                                            name: name, baseAddress: base, file: file, ownedMapping: .some(mapping),
                                            placement: placement, hugePages: hugePages))
        switch hugePages {
        case .none: break
        case .transparent: try channel.requestDone(.describePages(segment.id, pages: "THP asked for"))
        case .hugeTLB: try channel.requestDone(.describePages(segment.id, pages: "hugetlb \(segmentPageSize >> 20) MiB"))
        }
        return segment
    }

    /// Exports an existing page-aligned range of private anonymous memory (XPMEM's `make` on an
    /// address range). Its contents and address are kept: the bytes are copied into a memfd that is
    /// then mapped over the same addresses.
    ///
    /// No other thread may write the range during this call (those writes could be lost). Afterwards
    /// the range is shared memory: `fork()` children share it rather than copying it on write.
    /// With a `placement`, the copied pages land where it says (the range's old pages are freed).
    public func exportRange(_ range: UnsafeMutableRawBufferPointer, permit: Permit = Permit(rawValue: 0o600),
                            name: String = "", placement: Placement = .firstTouch) throws(XPMEMError)
        -> ExportedSegment
    {
        guard let base = range.baseAddress, range.count > 0 else {
            throw XPMEMError(.invalidArgument, "cannot export an empty range")
        }
        guard isPageAligned(Int(bitPattern: base)), isPageAligned(range.count) else {
            throw XPMEMError(.invalidArgument, "range \(base)+\(range.count) is not page-aligned (page size \(pageSize))")
        }
        do {
            guard try AddressSpace.isPrivateAnonymous(start: UInt(bitPattern: base), length: range.count) else {
                throw XPMEMError(.invalidArgument,
                    "range \(base)+\(range.count) is not entirely private anonymous read-write memory")
            }
        } catch let error as XPMEMError {
            throw error
        } catch {
            throw XPMEMError(.systemCallFailed, "cannot read /proc/self/maps: \(error)")
        }
        let file = try Self.makeFile(name: name, size: range.count)
        let staging: MemoryMapping
        do {
            staging = try MemoryMapping.mapShared(file, length: range.count, protection: .readWrite)
        } catch {
            throw XPMEMError.system("mmap of \(range.count) bytes", error)
        }
        try placement.apply(to: staging.base, length: range.count)
        do {
            staging.bytes.copyMemory(from: UnsafeRawBufferPointer(range))
            staging.unmap()
            // The memfd replaces the anonymous pages at the same address; the caller keeps owning the range.
            let replaced = try MemoryMapping.mapShared(file, length: range.count, protection: .readWrite,
                                                       placement: .replacing(base))
            _ = replaced.relinquish()
        } catch {
            throw XPMEMError.system("moving the range into a memfd", error)
        }
        let registration = try register(file, size: range.count, permit: permit, name: name, placement: placement)
        return track(ExportedSegment(broker: self, registration: registration, size: range.count, permit: permit,
                                     name: name, baseAddress: UInt(bitPattern: base), file: file, ownedMapping: nil,
                                     placement: placement))
    }

    /// Creates the memfd: sealable, and mode 0600 so that no other uid can reopen it writable through
    /// `/proc/PID/fd` (memfds start as 0777).
    static func makeFile(name: String, size: Int, hugePages: HugePages = .none) throws(XPMEMError) -> OwnedDescriptor {
        do {
            let file = try MemoryFile.create(name: hugePages.namePrefix + name, size: size,
                                             hugeTLB: hugePages == .hugeTLB)
            try MemoryFile.setMode(0o600, of: file)
            return file
        } catch {
            throw XPMEMError.system("memfd_create of \(size) bytes", error)
        }
    }

    /// What registering a segment gave: its id, the token it stands for (nil from a broker that
    /// predates `claim`), and the connection generation it is registered on.
    fileprivate struct Registration {
        var id: SegmentID
        var token: ReclaimToken?
        var generation: UInt64
    }

    /// Sends the memfd (read-write and a read-only reopening) to the broker under a fresh reclaim
    /// token (`claim`), or with `make` to a broker that predates `claim`, and returns the new id.
    private func register(_ file: borrowing OwnedDescriptor, size: Int, permit: Permit, name: String,
                          placement: Placement) throws(XPMEMError) -> Registration
    {
        guard permit.rawValue & ~Permit.validBits == 0 else {
            throw XPMEMError(.invalidArgument, "permit \(permit) may only have read/write bits (0o666)")
        }
        let generation = channel.generation
        var registration: Registration? = nil
        // A token whose digest gives no id (one in 2^63) is refused as an invalid argument: draw again.
        for _ in 0..<3 where registration == nil {
            let token = try Self.drawToken()
            do throws(XPMEMError) {
                let id = try Self.send(file, as: .claim(nil, token: token, size: UInt64(size), permit: permit, name: name),
                                       on: channel, generation: generation)
                registration = Registration(id: id, token: token, generation: generation)
            } catch let error where error.code == .protocolError && error.message.contains("unknownType") {
                // A broker from before `claim`: the segment is made the old way and will not survive it.
                let id = try Self.send(file, as: .make(size: UInt64(size), permit: permit, name: name), on: channel,
                                       generation: generation)
                registration = Registration(id: id, token: nil, generation: generation)
            } catch let error where error.code == .invalidArgument && error.message.contains("draw another") {
                continue
            }
        }
        guard let registration else { throw XPMEMError(.brokerInternal, "the broker refused three fresh reclaim tokens") }
        if placement != .firstTouch { try describePlacement(of: registration.id, as: placement) }
        return registration
    }

    /// 128 bits from the kernel's CSPRNG.
    private static func drawToken() throws(XPMEMError) -> ReclaimToken {
        do {
            return ReclaimToken(high: try ProcessHandle.randomUInt64(), low: try ProcessHandle.randomUInt64())
        } catch {
            throw XPMEMError.system("getrandom for a reclaim token", error)
        }
    }

    /// Sends `message` (`make` or `claim`) with the memfd and a read-only reopening of it on
    /// `channel`; returns the id the broker answered.
    static func send(_ file: borrowing OwnedDescriptor, as message: Message, on channel: BrokerChannel,
                     generation: UInt64?) throws(XPMEMError) -> SegmentID
    {
        let readOnly: OwnedDescriptor
        do {
            readOnly = try MemoryFile.reopenReadOnly(file)
        } catch {
            throw XPMEMError.system("reopening the memfd read-only", error)
        }
        let reply = try channel.request(message, passing: [file.fileDescriptor, readOnly.fileDescriptor],
                                        generation: generation)
        guard case .made(let id) = reply.message else { throw BrokerChannel.unexpected(reply.message, for: message) }
        return id
    }
}

extension ExportedSegment {
    /// Whether the segment still needs registering with the broker of `generation`.
    func needsRestoring(for generation: UInt64) -> Bool {
        state.withLock { state in
            guard !state.removed, reclaimToken != nil, let registered = state.generation else { return false }
            return registered != generation
        }
    }

    /// Registers the segment again, under its id, with the broker `channel` reaches (generation
    /// `generation`, maybe not installed yet), with its placement. Throws what the broker answered.
    func restore(on channel: BrokerChannel, generation: UInt64, installed: Bool) throws(XPMEMError) {
        guard let reclaimToken else { return }
        let message = Message.claim(id, token: reclaimToken, size: UInt64(size), permit: permit, name: name)
        let bound: UInt64? = installed ? generation : nil
        let result: Result<SegmentID, XPMEMError> = state.withLock { state in
            switch state.file {
            case .some(let file):
                return Result { () throws(XPMEMError) -> SegmentID in
                    try XPMEMBroker.send(file, as: message, on: channel, generation: bound)
                }
            case .none:
                return .failure(XPMEMError(.alreadyClosed, "segment \(id) has no file any more"))
            }
        }
        let answered = try result.get()
        guard answered == id else {
            try? channel.requestDone(.remove(answered))
            throw XPMEMError(.protocolError, "the broker registered segment \(id) again as \(answered)")
        }
        let placement = state.withLock { $0.placement }
        if placement != .firstTouch {
            try channel.requestDone(.describePlacement(id, placement: placement.description))
        }
        let removedMeanwhile = state.withLock { state in
            if !state.removed { state.generation = generation }
            return state.removed
        }
        if removedMeanwhile { try? channel.requestDone(.remove(id)) }
    }

    /// Registering again was refused: the segment lives on here, unknown to the broker.
    func abandon() { state.withLock { $0.generation = nil } }
}
