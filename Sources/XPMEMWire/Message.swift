/// Every message of the broker protocol, requests and replies alike.
///
/// Each message travels as one `SOCK_SEQPACKET` record: a `FrameHeader` followed by the payload this
/// type encodes. Requests come from clients; each is answered by exactly one reply carrying the same
/// request id.
public enum Message: Equatable, Sendable {
    // Requests
    /// The first message on a connection; the header carries the client's protocol version.
    case hello(clientName: String)
    /// Export a memfd (XPMEM `make`): the frame carries two descriptors, read-write then read-only.
    case make(size: UInt64, permit: Permit, name: String)
    /// Remove an exported segment (XPMEM `remove`).
    case remove(SegmentID)
    /// Ask for access to a segment (XPMEM `get`).
    case get(SegmentID, AccessMode)
    /// Give up an access handle and every attachment made through it (XPMEM `release`).
    case release(AccessHandle)
    /// Ask for a mapping of `length` bytes at `offset` (XPMEM `attach`).
    case attach(AccessHandle, offset: UInt64, length: UInt64)
    /// Tell the broker a mapping is gone (XPMEM `detach`).
    case detach(AttachmentID)
    /// Page through segments in id order, starting after `after` (nil: from the first).
    case listSegments(after: SegmentID?)
    case listClients
    case queryStatus
    /// Hands the broker its end of this client's event channel (the frame carries one descriptor): a
    /// socket on which the broker sends invalidation events and the client acknowledges them.
    case subscribe
    /// Tell every importer mapping the range to stop access and wait for their acknowledgements (or
    /// the deadline). With `holdForChange`, the range stays invalid until `endInvalidation`; without,
    /// the broker ends it as soon as the acknowledgements are in (an operator's invalidation).
    case invalidate(SegmentID, offset: UInt64, length: UInt64, deadlineMilliseconds: UInt32,
                    reason: InvalidationReason, holdForChange: Bool)
    /// The change is done: importers may map the range again.
    case endInvalidation(SegmentID, sequence: UInt64)
    /// The owner tells the broker where the segment's pages are meant to be ("node 1", "interleave
    /// 0,1"...), for `xpmemctl segments`; sent after `make` and after a migration.
    case describePlacement(SegmentID, placement: String)
    /// Export a window of the client's address-space file (XPMEM `make` of raw addresses; the C
    /// library): file offset == virtual address, so attach offsets are addresses relative to `base`.
    /// The frame carries two descriptors of the file, read-write then read-only. The exporter backs
    /// ranges on demand, when the broker sends `backRange` before an attach.
    case makeAddressSpace(base: UInt64, size: UInt64, permit: Permit, name: String)
    /// An importer touched a page of its attachment that has no page in the exporter's file (the
    /// exporter unmapped or moved that memory since): ask the exporter to back `offset..<offset+length`
    /// of the segment again and to give every page it backs a page in the file, so the importer's
    /// access can complete. Answered with `faultResolved` once the exporter has.
    case resolveFault(AccessHandle, offset: UInt64, length: UInt64)
    /// Export a memfd under the id `token` stands for (`ReclaimToken.segmentID(ownerUID:)` of the
    /// sender's uid): a first export (`segment` nil), or the same segment registered again with a
    /// broker that restarted (`segment` its previous id, which must be the one the token stands for).
    /// Refused while a live segment has that id. The frame carries two descriptors, read-write then
    /// read-only, as `make`'s; the reply is `made`. Added to version 3 without a bump: a broker that
    /// predates it answers `failure(malformedFrame)` and keeps the connection, and the library then
    /// falls back to `make`.
    case claim(SegmentID?, token: ReclaimToken, size: UInt64, permit: Permit, name: String)
    /// `makeAddressSpace` under the id `token` stands for, as `claim` is `make`'s: how the C library
    /// exports, so that after a broker restart it registers its windows again with the ids its peers
    /// hold. Same checks and descriptors as `makeAddressSpace`; the reply is `made`.
    case claimAddressSpace(SegmentID?, token: ReclaimToken, base: UInt64, size: UInt64, permit: Permit, name: String)
    /// The owner moved the segment's bytes to a fresh memfd (the frame carries two descriptors of it,
    /// read-write then read-only, sealed as `make`'s): the broker hands that file out from now on and
    /// sends it to every importer still mapping the segment, so that a descriptor the broker revoked
    /// (an importer that missed an invalidation deadline) aliases nothing live any more.
    case replaceSegmentFiles(SegmentID)
    /// The client's attachment cache counters (the C library's), kept by the broker for `xpmemctl
    /// clients` until the next report or the end of the connection; answered with `done`. Added to
    /// version 3 without a bump: a broker that predates it answers `failure(malformedFrame)` and keeps
    /// the connection, and the library then stops reporting.
    case reportAttachCache(AttachCacheCounters)
    /// The owner says the segment's pages in `offset..<offset+length` hold nothing it needs: the broker
    /// may drop them (`dropFreePages`, memory pressure) as long as nothing has written them since.
    /// The owner write-protects them first and sends `freeHintWritten` before any of its own writes
    /// lands there; a writable descriptor handed to anyone (even an importer's) ends every hint of the
    /// segment, since nobody can watch its writes. Answered with `freePages`: the pages trusted free.
    case hintFree(SegmentID, offset: UInt64, length: UInt64)
    /// The owner is about to write the range: its pages are no longer free. Answered with `done`
    /// before the owner lets the write proceed.
    case freeHintWritten(SegmentID, offset: UInt64, length: UInt64)
    /// The owner asks the broker to drop now the pages still trusted free (before a migration, which
    /// then has less to move). Answered with `freePages`: the pages dropped.
    case dropFreePages(SegmentID)
    /// The owner tells the broker what pages back the segment ("4 KiB", "THP 254 of 256 MiB"...), for
    /// `xpmemctl segments`; answered with `done`.
    case describePages(SegmentID, pages: String)

    // Sent by a client on its event channel
    /// The importer has stopped access to the range of invalidation `sequence`.
    case acknowledge(SegmentID, sequence: UInt64)
    /// The exporter has backed what it could of a `backRange` (`failure` nil), or says why it could not.
    case rangeBacked(SegmentID, sequence: UInt64, failure: ErrorCode?, text: String, extents: [BackedExtent])

    // Events, sent by the broker on a client's event channel
    /// Stop access to this range of the segment, then acknowledge.
    case invalidateBegin(SegmentID, offset: UInt64, length: UInt64, sequence: UInt64, reason: InvalidationReason)
    /// The range may be accessed again.
    case invalidateEnd(SegmentID, offset: UInt64, length: UInt64, sequence: UInt64)
    /// The segment is gone for this client; its mappings must be revoked.
    case released(SegmentID, reason: ReleaseReason)
    /// To an address-space exporter: make your memory at `start..<start+length` the file's pages
    /// (copy and map over), then answer `rangeBacked` with the same sequence.
    case backRange(SegmentID, sequence: UInt64, start: UInt64, length: UInt64)
    /// As `backRange`, and then allocate (as zeros) the pages of the backed extents that have none
    /// yet, so that an importer's fault there finds a page; answered with `rangeBacked`.
    case fillRange(SegmentID, sequence: UInt64, start: UInt64, length: UInt64)
    /// The segment's bytes live in another file now (the frame carries it, opened for `access`): map
    /// it in place of the old one under the attachments of that access, at the end of the window in
    /// force. An importer holding both kinds of attachment gets one event for each.
    case segmentFileReplaced(SegmentID, access: AccessMode)

    // Replies
    case welcome(ClientID, brokerPID: Int32)
    case made(SegmentID)
    case granted(AccessHandle, size: UInt64, access: AccessMode)
    /// The frame carries the segment's descriptor, read-only or read-write as granted.
    case attached(AttachmentID)
    case done
    case failure(ErrorCode, String)
    case segments([SegmentSummary], more: Bool)
    case clients([ClientSummary])
    case status(BrokerStatus)
    case invalidated(InvalidationReport)
    /// The reply to an attach of an address-space segment: where the requested range starts in the
    /// file, and which parts of it are backed. The frame carries the file's descriptor.
    case attachedWindow(AttachmentID, fileOffset: UInt64, extents: [BackedExtent])
    /// The reply to `resolveFault`: the file ranges (== exporter addresses) that now have pages; a
    /// faulting address outside them is memory the exporter no longer has.
    case faultResolved(extents: [BackedExtent])
    /// The reply to `hintFree` (pages now trusted free) and to `dropFreePages` (pages dropped).
    case freePages(count: UInt64)

    /// How many descriptors travel with this message; a frame with any other number is malformed.
    public var descriptorCount: Int {
        switch self {
        case .make, .makeAddressSpace, .claim, .claimAddressSpace, .replaceSegmentFiles: 2
        case .attached, .attachedWindow, .subscribe, .segmentFileReplaced: 1
        default: 0
        }
    }

    /// Whether the broker answers this request only once other clients have acted (an invalidation
    /// waits for every importer's acknowledgement): by default its sender sleeps at once instead of
    /// polling for the reply, which would take a core from the very clients it waits for.
    public var waitsForOtherClients: Bool {
        if case .invalidate = self { return true }
        return false
    }

    /// Whether this is a request a client sends on its main connection.
    public var isRequest: Bool { type.rawValue < MessageType.firstClientEvent }

    /// Whether this is a message a client sends on its event channel.
    public var isClientEvent: Bool { type.rawValue >= MessageType.firstClientEvent && type.rawValue < MessageType.firstBrokerEvent }
}

/// The numeric type in a frame header.
public enum MessageType: UInt16, Sendable, CaseIterable {
    static let firstClientEvent: UInt16 = 0x2000
    static let firstBrokerEvent: UInt16 = 0x4000

    case hello = 1, make, remove, get, release, attach, detach, listSegments, listClients, queryStatus
    case subscribe, invalidate, endInvalidation, describePlacement, makeAddressSpace, claim, resolveFault
    case claimAddressSpace, replaceSegmentFiles, reportAttachCache, hintFree, freeHintWritten, dropFreePages
    case describePages
    case acknowledge = 0x2001, rangeBacked
    case invalidateBegin = 0x4001, invalidateEnd, released, backRange, fillRange, segmentFileReplaced
    case welcome = 0x8001, made, granted, attached, done, failure, segments, clients, status, invalidated
    case attachedWindow, faultResolved, freePages
}

extension Message {
    public var type: MessageType {
        switch self {
        case .hello: .hello
        case .make: .make
        case .remove: .remove
        case .get: .get
        case .release: .release
        case .attach: .attach
        case .detach: .detach
        case .listSegments: .listSegments
        case .listClients: .listClients
        case .queryStatus: .queryStatus
        case .welcome: .welcome
        case .made: .made
        case .granted: .granted
        case .attached: .attached
        case .done: .done
        case .failure: .failure
        case .segments: .segments
        case .clients: .clients
        case .status: .status
        case .subscribe: .subscribe
        case .invalidate: .invalidate
        case .endInvalidation: .endInvalidation
        case .describePlacement: .describePlacement
        case .acknowledge: .acknowledge
        case .invalidateBegin: .invalidateBegin
        case .invalidateEnd: .invalidateEnd
        case .released: .released
        case .invalidated: .invalidated
        case .makeAddressSpace: .makeAddressSpace
        case .claim: .claim
        case .claimAddressSpace: .claimAddressSpace
        case .replaceSegmentFiles: .replaceSegmentFiles
        case .reportAttachCache: .reportAttachCache
        case .segmentFileReplaced: .segmentFileReplaced
        case .rangeBacked: .rangeBacked
        case .backRange: .backRange
        case .resolveFault: .resolveFault
        case .fillRange: .fillRange
        case .faultResolved: .faultResolved
        case .attachedWindow: .attachedWindow
        case .hintFree: .hintFree
        case .freeHintWritten: .freeHintWritten
        case .dropFreePages: .dropFreePages
        case .describePages: .describePages
        case .freePages: .freePages
        }
    }
}
