import XPMEMWire

/// The broker's state and every decision about it: which segments exist, who may access them, who
/// maps what. It performs no I/O; the daemon applies its answers to sockets and descriptors, and tests
/// drive it directly.
public struct Registry: Sendable {
    public private(set) var clients: [ClientID: ClientRecord] = [:]
    public internal(set) var segments: [SegmentID: SegmentRecord] = [:]
    public private(set) var grants: [AccessHandle: GrantRecord] = [:]
    public private(set) var attachments: [AttachmentID: AttachmentRecord] = [:]
    /// The attachments of each segment that has any: an invalidation asks for a segment's importers,
    /// and a node holds many more attachments than any one segment has.
    public private(set) var attachmentsOfSegment: [SegmentID: Set<AttachmentID>] = [:]
    /// The files whose descriptors the daemon keeps for the segments.
    public private(set) var heldFiles = HeldFiles()
    public let limits: RegistryLimits

    /// Where the last memory-pressure event stopped taking free pages: the next starts after it, so
    /// that no segment waits behind others hinted again and again.
    var freePagesResumeAfter: SegmentID? = nil
    /// Every segment id ever issued, so an id is never reused while the broker runs.
    private var issuedSegmentIDs: Set<UInt64> = []
    private var nextClient: UInt64 = 1
    private var nextHandle: UInt64 = 1
    private var nextAttachment: UInt64 = 1
    private let randomSource: @Sendable () -> UInt64

    /// - Parameter randomSource: where segment ids come from; the daemon passes the kernel's CSPRNG.
    public init(limits: RegistryLimits = RegistryLimits(), randomSource: @escaping @Sendable () -> UInt64) {
        self.limits = limits
        self.randomSource = randomSource
    }

    // MARK: Clients

    /// - Parameter node: the NUMA node the client ran on when it connected, if known.
    public mutating func connect(_ credentials: Credentials, name: String, node: Int? = nil) -> ClientID {
        let id = ClientID(rawValue: nextClient)
        nextClient += 1
        clients[id] = ClientRecord(id: id, credentials: credentials, name: name, node: node)
        return id
    }

    /// What went away with a client.
    public struct Departure: Equatable, Sendable {
        public var removedSegments: [SegmentID] = []
        public var releasedGrants = 0
        public var detachedAttachments = 0
    }

    /// Forgets a client that disconnected or died: its segments are removed, its grants and attachments freed.
    public mutating func disconnect(_ client: ClientID) -> Departure {
        guard let record = clients.removeValue(forKey: client) else { return Departure() }
        var departure = Departure()
        for attachment in record.attachments where forgetAttachment(attachment) != nil {
            departure.detachedAttachments += 1
        }
        for handle in record.grants where grants.removeValue(forKey: handle) != nil {
            departure.releasedGrants += 1
        }
        for segment in record.segments.sorted() {
            guard let removed = segments.removeValue(forKey: segment) else { continue }
            heldFiles.remove(segment, of: client, file: removed.file)
            departure.removedSegments.append(segment)
        }
        return departure
    }

    // MARK: Exporting

    /// Registers a new segment owned by `client` and returns its fresh, random id.
    /// - Parameter pageSize: the size of its file's pages (a hugetlb memfd's are huge); nil for the
    ///   base page size.
    public mutating func make(
        by client: ClientID, size: UInt64, permit: Permit, name: String, pageSize: UInt64? = nil
    ) throws(BrokerError) -> SegmentID {
        guard size <= limits.maximumSegmentSize else {
            throw BrokerError(.invalidArgument, "segment size \(size) exceeds the limit of \(limits.maximumSegmentSize) bytes")
        }
        return try register(by: client, size: size, permit: permit, name: name, addressSpaceBase: nil,
                            pageSize: pageSize)
    }

    /// Registers a window `base..<base+size` of the client's address-space file (file offset ==
    /// virtual address) as a new segment, under a fresh id or under `chosen` (a claim).
    /// - Parameters:
    ///   - pageSize: the file's page size, which must be the base page size (offsets are addresses);
    ///     nil for the base page size.
    ///   - file: the address-space file, when the daemon knows it: windows of one file share its
    ///     descriptors (`heldFiles`).
    ///   - reregistration: the window existed in an earlier life of the broker (`claimAddressSpace`
    ///     with the id it had): whom it allowed may hold the file already.
    public mutating func makeAddressSpace(
        by client: ClientID, base: UInt64, size: UInt64, permit: Permit, name: String, pageSize: UInt64? = nil,
        file: FileIdentity? = nil, id chosen: SegmentID? = nil, reregistration: Bool = false
    ) throws(BrokerError) -> SegmentID {
        let (end, overflow) = base.addingReportingOverflow(size)
        guard base % limits.pageSize == 0, !overflow, end <= AddressSpace.maximumSize else {
            throw BrokerError(.invalidArgument,
                "window \(base)+\(size) is not page-aligned inside the \(AddressSpace.maximumSize)-byte address space")
        }
        let id = try register(by: client, size: size, permit: permit, name: name, addressSpaceBase: base,
                              pageSize: pageSize, file: file, id: chosen, reregistration: reregistration)
        if reregistration { clients[client]?.addressSpaceReach.windowReclaimed(permit) }
        return id
    }

    /// Registers a segment under a fresh random id, or under `chosen` (a claim, checked by the caller
    /// to stand for the owner's token) when no live segment has it.
    mutating func register(
        by client: ClientID, size: UInt64, permit: Permit, name: String, addressSpaceBase: UInt64?,
        pageSize requestedPageSize: UInt64? = nil, file: FileIdentity? = nil, id chosen: SegmentID? = nil,
        reregistration: Bool = false
    ) throws(BrokerError) -> SegmentID {
        guard var owner = clients[client] else { throw BrokerError(.notConnected, "say hello first") }
        let pageSize = requestedPageSize ?? limits.pageSize
        guard pageSize >= limits.pageSize, pageSize & (pageSize - 1) == 0,
              addressSpaceBase == nil || pageSize == limits.pageSize
        else {
            throw BrokerError(.invalidArgument,
                "a file with \(pageSize)-byte pages cannot back \(addressSpaceBase == nil ? "a segment" : "an address space")")
        }
        guard size > 0, size % pageSize == 0 else {
            throw BrokerError(.invalidArgument, "segment size \(size) is not a positive multiple of the page size \(pageSize)")
        }
        guard permit.rawValue & ~Permit.validBits == 0 else {
            throw BrokerError(.invalidArgument, "permit \(permit) has bits other than read/write for owner, group, other")
        }
        guard owner.segments.count < limits.segmentsPerClient else {
            throw BrokerError(.resourceExhausted, "this client already exports \(owner.segments.count) segments")
        }
        if addressSpaceBase != nil {
            var reach = owner.addressSpaceReach
            let knownFileInUse = owner.segments.contains { id in
                guard let window = segments[id] else { return false }
                return window.addressSpaceBase != nil && window.file == reach.file
            }
            reach.windowRegistered(on: file, knownFileInUse: knownFileInUse)
            if let why = reach.refusal(ofWindow: permit, owner: owner.credentials, reregistration: reregistration) {
                throw BrokerError(.permissionDenied,
                    "a window with mode \(permit) cannot be made: \(why), and the file reaches every window (a descriptor cannot be taken back); make narrower windows before peers get any, or in a process of their own")
            }
            owner.addressSpaceReach = reach
        }
        let id: SegmentID
        if let chosen {
            if let live = segments[chosen] {
                throw BrokerError(.busy, "segment \(chosen) is live (registered by pid \(live.ownerCredentials.pid)); it cannot be registered twice")
            }
            id = chosen
            issuedSegmentIDs.insert(chosen.rawValue)
        } else {
            // Ids stay below 2^63, so that C callers, who hold them as a signed xpmem_segid_t, see them positive.
            var raw: UInt64
            repeat { raw = randomSource() & UInt64(Int64.max) } while raw == 0 || issuedSegmentIDs.contains(raw)
            issuedSegmentIDs.insert(raw)
            id = SegmentID(rawValue: raw)
        }
        segments[id] = SegmentRecord(id: id, owner: client, ownerCredentials: owner.credentials, size: size,
                                     permit: permit, name: name, pageSize: pageSize, addressSpaceBase: addressSpaceBase,
                                     file: addressSpaceBase == nil ? nil : file)
        heldFiles.add(id, of: client, file: segments[id]?.file)
        owner.segments.insert(id)
        clients[client] = owner
        return id
    }

    /// Removes a segment; only its owner may. Grants and attachments on it stay until released or
    /// detached, but no new attach succeeds.
    /// Records where the owner placed the segment's pages (text such as "node 1", for listings).
    /// Keeps the counters `client`'s attachment cache reported, in place of its last report.
    public mutating func reportAttachCache(_ counters: AttachCacheCounters, by client: ClientID) throws(BrokerError) {
        guard clients[client] != nil else { throw BrokerError(.invalidArgument, "client \(client) is not connected") }
        clients[client]?.attachCache = counters
    }

    public mutating func describePlacement(of segment: SegmentID, as placement: String, by client: ClientID)
        throws(BrokerError)
    {
        try checkDescription(placement, of: segment, by: client, what: "a placement")
        segments[segment]?.placement = placement
    }

    /// Records what pages back the segment (text such as "THP 254 of 256 MiB", for listings).
    public mutating func describePages(of segment: SegmentID, as pages: String, by client: ClientID) throws(BrokerError) {
        try checkDescription(pages, of: segment, by: client, what: "a description of pages")
        segments[segment]?.pages = pages
    }

    /// Only the owner describes its segment, in 1 to 64 printable ASCII characters.
    private func checkDescription(_ text: String, of segment: SegmentID, by client: ClientID, what: String)
        throws(BrokerError)
    {
        guard let record = segments[segment] else { throw Registry.segmentNotFound(segment) }
        guard record.owner == client else {
            throw BrokerError(.permissionDenied, "segment \(segment) belongs to another client (pid \(record.ownerCredentials.pid))")
        }
        guard !text.isEmpty, text.utf8.count <= 64,
              text.unicodeScalars.allSatisfy({ $0.isASCII && $0.value >= 0x20 && $0.value < 0x7f }) else {
            throw BrokerError(.invalidArgument, "\(what) is 1 to 64 printable ASCII characters")
        }
    }

    /// The NUMA node where most of the segment's attached bytes are used, by the node each
    /// attaching client ran on when it connected; nil when nothing with a known node is attached.
    /// Ties go to the lower node, so the answer is stable.
    public func importerNode(of segment: SegmentID) -> Int? {
        var bytesPerNode: [Int: UInt64] = [:]
        for attachment in attachments(of: segment) {
            guard let node = clients[attachment.client]?.node else { continue }
            bytesPerNode[node, default: 0] += attachment.length
        }
        return bytesPerNode.max { left, right in
            left.value != right.value ? left.value < right.value : left.key > right.key
        }?.key
    }

    public mutating func remove(_ segment: SegmentID, by client: ClientID) throws(BrokerError) {
        guard let record = segments[segment] else { throw Registry.segmentNotFound(segment) }
        guard record.owner == client else {
            throw BrokerError(.permissionDenied, "segment \(segment) belongs to another client (pid \(record.ownerCredentials.pid))")
        }
        segments[segment] = nil
        heldFiles.remove(segment, of: client, file: record.file)
        clients[client]?.segments.remove(segment)
        if record.addressSpaceBase != nil {
            let windowsLeft = clients[client]?.segments.count { segments[$0]?.addressSpaceBase != nil } ?? 0
            clients[client]?.addressSpaceReach.windowRemoved(record.permit, windowsLeft: windowsLeft)
        }
    }

    // MARK: Importing

    /// Checks `client`'s right to `access` the segment and grants a handle for it.
    public mutating func get(
        _ segment: SegmentID, access: AccessMode, by client: ClientID
    ) throws(BrokerError) -> GrantRecord {
        guard var importer = clients[client] else { throw BrokerError(.notConnected, "say hello first") }
        guard let record = segments[segment] else { throw Registry.segmentNotFound(segment) }
        guard PermissionPolicy.allows(importer.credentials, access: access, owner: record.ownerCredentials,
                                      permit: record.permit)
        else {
            throw BrokerError(.permissionDenied,
                "uid \(importer.credentials.uid) may not get segment \(segment) \(access): its mode is \(record.permit), owner uid \(record.ownerCredentials.uid)")
        }
        try checkEveryWindowAllows(importer, access: access, toUse: record, by: client)
        guard importer.grants.count < limits.grantsPerClient else {
            throw BrokerError(.resourceExhausted, "this client already holds \(importer.grants.count) grants")
        }
        let grant = GrantRecord(handle: AccessHandle(rawValue: nextHandle), client: client, segment: segment,
                                access: access)
        nextHandle += 1
        grants[grant.handle] = grant
        importer.grants.insert(grant.handle)
        clients[client] = importer
        return grant
    }

    /// A window's file reaches every window of the address space (`AddressSpaceFileReach`): only a
    /// client that each of them (and each removed while others live) allows `access` may get or attach
    /// one. The owner has the memory anyway.
    private func checkEveryWindowAllows(
        _ importer: ClientRecord, access: AccessMode, toUse record: SegmentRecord, by client: ClientID
    ) throws(BrokerError) {
        guard record.addressSpaceBase != nil, record.owner != client, !importer.credentials.isSuperuser,
              let owner = clients[record.owner] else { return }
        func allows(_ permit: Permit) -> Bool {
            PermissionPolicy.allows(importer.credentials, access: access, owner: record.ownerCredentials, permit: permit)
        }
        // Which window refuses is not said: its id and mode are not the importer's to learn.
        let refusal = BrokerError(.permissionDenied,
            "uid \(importer.credentials.uid) may not use segment \(record.id) \(access): it is a window of pid \(record.ownerCredentials.pid)'s address space, whose file reaches every window, and another window of it (or one removed while others live, whose memory stays in the file) does not allow uid \(importer.credentials.uid) that")
        for other in owner.segments where other != record.id {
            guard let window = segments[other], window.addressSpaceBase != nil, !allows(window.permit) else { continue }
            throw refusal
        }
        if owner.addressSpaceReach.retiredPermits.contains(where: { !allows($0) }) { throw refusal }
    }

    /// Gives up a handle and every attachment made through it; returns the attachments dropped.
    @discardableResult
    public mutating func release(_ handle: AccessHandle, by client: ClientID) throws(BrokerError) -> [AttachmentID] {
        guard let grant = grants[handle], grant.client == client else { throw Registry.handleNotFound(handle) }
        grants[handle] = nil
        clients[client]?.grants.remove(handle)
        // Only the client's own attachments can have been made through its handle.
        let dropped = (clients[client]?.attachments ?? []).filter { attachments[$0]?.handle == handle }.sorted {
            $0.rawValue < $1.rawValue
        }
        for attachment in dropped {
            forgetAttachment(attachment)
            clients[client]?.attachments.remove(attachment)
        }
        return dropped
    }

    /// Validates a request to map `length` bytes at `offset` through `handle` and records the mapping.
    public mutating func attach(
        _ handle: AccessHandle, offset: UInt64, length: UInt64, by client: ClientID
    ) throws(BrokerError) -> AttachmentRecord {
        guard let grant = grants[handle], grant.client == client else { throw Registry.handleNotFound(handle) }
        guard let segment = segments[grant.segment] else {
            throw BrokerError(.notFound, "segment \(grant.segment) was removed; release \(handle)")
        }
        guard offset % segment.pageSize == 0, length % segment.pageSize == 0, length > 0 else {
            throw BrokerError(.invalidArgument,
                "offset \(offset) and length \(length) must be multiples of segment \(segment.id)'s page size \(segment.pageSize), length non-zero")
        }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= segment.size else {
            throw BrokerError(.invalidArgument,
                "range \(offset)+\(length) lies outside segment \(segment.id) of \(segment.size) bytes")
        }
        guard let importer = clients[client], importer.attachments.count < limits.attachmentsPerClient else {
            throw BrokerError(.resourceExhausted, "this client already has too many attachments")
        }
        // Windows made or removed since the grant count too: the attach is what hands the file over.
        try checkEveryWindowAllows(importer, access: grant.access, toUse: segment, by: client)
        let record = AttachmentRecord(id: AttachmentID(rawValue: nextAttachment), client: client, handle: handle,
                                      segment: segment.id, offset: offset, length: length, access: grant.access)
        nextAttachment += 1
        if segment.addressSpaceBase != nil, segment.owner != client {
            clients[segment.owner]?.addressSpaceReach.handed(to: importer.credentials, access: grant.access)
        }
        attachments[record.id] = record
        attachmentsOfSegment[record.segment, default: []].insert(record.id)
        clients[client]?.attachments.insert(record.id)
        return record
    }

    /// Forgets a mapping the client has unmapped.
    public mutating func detach(_ attachment: AttachmentID, by client: ClientID) throws(BrokerError) {
        guard let record = attachments[attachment], record.client == client else {
            throw BrokerError(.notFound, "no \(attachment) on this connection")
        }
        forgetAttachment(attachment)
        clients[client]?.attachments.remove(attachment)
    }

    /// Removes an attachment's record and its entry in the segment's index; the client's set is the
    /// caller's to update.
    @discardableResult
    private mutating func forgetAttachment(_ attachment: AttachmentID) -> AttachmentRecord? {
        guard let record = attachments.removeValue(forKey: attachment) else { return nil }
        attachmentsOfSegment[record.segment]?.remove(attachment)
        if attachmentsOfSegment[record.segment]?.isEmpty == true { attachmentsOfSegment[record.segment] = nil }
        return record
    }

    /// The attachments of `segment`, in no particular order.
    public func attachments(of segment: SegmentID) -> [AttachmentRecord] {
        (attachmentsOfSegment[segment] ?? []).compactMap { attachments[$0] }
    }

    // MARK: Errors

    static func segmentNotFound(_ segment: SegmentID) -> BrokerError {
        BrokerError(.notFound, "no segment \(segment): it was never made, was removed, or its exporter exited")
    }

    static func handleNotFound(_ handle: AccessHandle) -> BrokerError {
        BrokerError(.notFound, "no \(handle) on this connection (handles are valid only where they were obtained)")
    }
}

// MARK: Invalidation support

extension Registry {
    /// Checks that `client` may invalidate a range of `segment` (its owner, or the owner's uid, or the
    /// superuser) and that the range is page-aligned and inside the segment.
    public func authorizeInvalidation(
        of segment: SegmentID, offset: UInt64, length: UInt64, by client: ClientID
    ) throws(BrokerError) {
        guard let requester = clients[client] else { throw BrokerError(.notConnected, "say hello first") }
        guard let record = segments[segment] else { throw Registry.segmentNotFound(segment) }
        guard record.owner == client || requester.credentials.uid == record.ownerCredentials.uid
                || requester.credentials.isSuperuser
        else {
            throw BrokerError(.permissionDenied, "only the owner of segment \(segment) (uid \(record.ownerCredentials.uid)) may invalidate it")
        }
        guard offset % record.pageSize == 0, length % record.pageSize == 0, length > 0 else {
            throw BrokerError(.invalidArgument,
                "offset \(offset) and length \(length) must be multiples of segment \(segment)'s page size \(record.pageSize), length non-zero")
        }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= record.size else {
            throw BrokerError(.invalidArgument, "range \(offset)+\(length) lies outside segment \(segment) of \(record.size) bytes")
        }
    }

    /// Clients with an attachment overlapping the range, in id order.
    public func importers(of segment: SegmentID, overlapping offset: UInt64, length: UInt64) -> [ClientID] {
        var clients = attachments(of: segment).filter { $0.overlaps(offset: offset, length: length) }.map(\.client)
        clients.sort { $0.rawValue < $1.rawValue }
        // Sorted, so a client's several attachments are neighbours.
        return clients.enumerated().compactMap { index, client in index > 0 && clients[index - 1] == client ? nil : client }
    }

    /// Clients holding a grant on the segment (who must hear that it is gone), in id order.
    public func grantHolders(of segment: SegmentID) -> [ClientID] {
        Set(grants.values.filter { $0.segment == segment }.map(\.client)).sorted { $0.rawValue < $1.rawValue }
    }

    /// `grantHolders(of:)` for several segments in one pass over the grants (a departing client's
    /// segments: one pass per segment would cost every grant of the node per segment).
    public func grantHolders(ofEach segments: Set<SegmentID>) -> [SegmentID: [ClientID]] {
        var holders: [SegmentID: Set<ClientID>] = [:]
        for grant in grants.values where segments.contains(grant.segment) {
            holders[grant.segment, default: []].insert(grant.client)
        }
        return holders.mapValues { $0.sorted { $0.rawValue < $1.rawValue } }
    }

    /// Takes away `client`'s grants on `segment` and the attachments made through them (an importer
    /// that missed an invalidation deadline). Returns how many grants went.
    @discardableResult
    public mutating func revokeGrants(of client: ClientID, on segment: SegmentID) -> Int {
        let revoked = grants.values.filter { $0.client == client && $0.segment == segment }.map(\.handle)
        for handle in revoked { _ = try? release(handle, by: client) }
        return revoked.count
    }
}
