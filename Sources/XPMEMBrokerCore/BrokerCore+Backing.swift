import XPMEMWire

extension BrokerCore {
    /// How long an exporter may take to back a range before the importer's attach fails.
    public static let backingDeadline: UInt64 = 10_000_000

    /// Asks the owner of an address-space segment to back the attachment's range; the importer is
    /// answered when it has.
    mutating func requestBacking(
        of attachment: AttachmentRecord, base: UInt64, importer: PeerID, requestID: UInt32, now: UInt64,
        purpose: PendingBacking.Purpose = .attach
    ) -> [BrokerEffect] {
        guard let owner = registry.segments[attachment.segment]?.owner, let exporter = peerOfClient[owner],
              peers[exporter]?.subscribed == true
        else {
            try? registry.detach(attachment.id, by: attachment.client)
            return [.send(importer, .main, requestID: requestID, .failure(.notFound,
                "the exporter of segment \(attachment.segment) does not serve attaches of its address space (no event channel)"))]
        }
        nextBackingSequence += 1
        let pending = PendingBacking(
            purpose: purpose, sequence: nextBackingSequence, segment: attachment.segment, exporter: exporter, importer: importer,
            requestID: requestID, attachment: attachment.id, start: base + attachment.offset, length: attachment.length,
            deadline: now + Self.backingDeadline)
        pendingBackings[pending.sequence] = pending
        let event: Message = switch purpose {
        case .attach: .backRange(pending.segment, sequence: pending.sequence, start: pending.start, length: pending.length)
        case .fault: .fillRange(pending.segment, sequence: pending.sequence, start: pending.start, length: pending.length)
        }
        return [.send(exporter, .events, requestID: 0, event)]
    }

    /// The most one fault may have an exporter fill: filling allocates the exporter's memory, so no
    /// importer may make it fill more than a fault needs at once.
    public static let maximumFaultLength: UInt64 = 2 << 20

    /// An importer's attachment faulted where the exporter's file has no page: the exporter backs and
    /// fills the range, then the importer is told which parts have pages. Checked as an attach is (a
    /// grant of this client, page-aligned, inside the segment), but nothing stays recorded.
    mutating func resolveFault(
        _ handle: AccessHandle, offset: UInt64, length: UInt64, importer: PeerID, client: ClientID,
        requestID: UInt32, now: UInt64
    ) throws(BrokerError) -> [BrokerEffect] {
        guard length <= Self.maximumFaultLength else {
            throw BrokerError(.invalidArgument,
                "a fault may ask for at most \(Self.maximumFaultLength) bytes to be filled, not \(length)")
        }
        let attachment = try registry.attach(handle, offset: offset, length: length, by: client)
        guard let base = registry.segments[attachment.segment]?.addressSpaceBase else {
            try? registry.detach(attachment.id, by: client)
            throw BrokerError(.invalidArgument,
                "segment \(attachment.segment) is a memfd segment: its pages never move, so there is no fault to resolve")
        }
        return requestBacking(of: attachment, base: base, importer: importer, requestID: requestID, now: now,
                              purpose: .fault)
    }

    /// The exporter answered a `backRange`: the importer gets its window, or the exporter's refusal.
    mutating func rangeBacked(
        _ segment: SegmentID, sequence: UInt64, failure: ErrorCode?, text: String, extents: [BackedExtent],
        from peer: PeerID
    ) -> [BrokerEffect] {
        guard let pending = pendingBackings[sequence], pending.exporter == peer, pending.segment == segment else {
            return []
        }
        pendingBackings[sequence] = nil
        guard let attachment = registry.attachments[pending.attachment] else {
            // The importer released the grant (or lost it to a missed invalidation deadline) while the
            // exporter backed the range: its attach still gets the one reply every request gets.
            return [.send(pending.importer, .main, requestID: pending.requestID, .failure(.notFound,
                          "\(pending.attachment) went away before its exporter backed the range"))]
        }
        if pending.purpose == .fault { try? registry.detach(attachment.id, by: attachment.client) }
        if let failure {
            try? registry.detach(attachment.id, by: attachment.client)
            return [.send(pending.importer, .main, requestID: pending.requestID,
                          .failure(failure, "the exporter could not back the range: \(text)"))]
        }
        guard pending.accepts(extents) else {
            try? registry.detach(attachment.id, by: attachment.client)
            return [.send(pending.importer, .main, requestID: pending.requestID, .failure(.internalError,
                          "the exporter answered with extents outside the range or out of order")),
                    .note(.misbehaved(uid: peers[peer]?.credentials.uid ?? 0, pid: peers[peer]?.credentials.pid ?? 0,
                                      "answered backRange with extents outside the range or out of order"))]
        }
        if pending.purpose == .fault {
            return [.send(pending.importer, .main, requestID: pending.requestID, .faultResolved(extents: extents))]
        }
        return [.send(pending.importer, .main, requestID: pending.requestID,
                      .attachedWindow(attachment.id, fileOffset: pending.start, extents: extents),
                      handOver: SegmentFileHandOver(segment: segment, access: attachment.access))]
    }

    /// Fails the attaches whose exporter did not answer in time, or which cannot be answered any more
    /// (exporter or segment gone). Importers that left are simply forgotten.
    mutating func settleBackings(now: UInt64) -> [BrokerEffect] {
        // Called on every turn of the daemon's loop: nothing to sort or allocate when nothing waits.
        guard !pendingBackings.isEmpty else { return [] }
        var effects: [BrokerEffect] = []
        for pending in pendingBackings.values.sorted(by: { $0.sequence < $1.sequence }) {
            let importerGone = peers[pending.importer] == nil
            let exporterGone = peers[pending.exporter] == nil || registry.segments[pending.segment] == nil
            guard importerGone || exporterGone || pending.deadline <= now else { continue }
            pendingBackings[pending.sequence] = nil
            if let attachment = registry.attachments[pending.attachment] {
                try? registry.detach(attachment.id, by: attachment.client)
            }
            if importerGone { continue }
            let failure: Message = exporterGone
                ? .failure(.notFound, "segment \(pending.segment) went away before its exporter backed the range")
                : .failure(.deadlineMissed, "the exporter did not back the range within \(Self.backingDeadline / 1_000_000) s")
            effects.append(.send(pending.importer, .main, requestID: pending.requestID, failure))
        }
        return effects
    }
}
