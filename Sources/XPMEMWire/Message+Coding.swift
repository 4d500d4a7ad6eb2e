extension Message {
    /// Appends this message's fields (not the header).
    func encodePayload(into writer: inout WireWriter) {
        switch self {
        case .hello(let name):
            writer.write(name, maximumLength: 256)
        case .make(let size, let permit, let name):
            writer.write(size)
            writer.write(permit.rawValue)
            writer.write(name, maximumLength: 256)
        case .remove(let id), .made(let id):
            writer.write(id.rawValue)
        case .get(let id, let access):
            writer.write(id.rawValue)
            writer.write(access.rawValue)
        case .release(let handle):
            writer.write(handle.rawValue)
        case .attach(let handle, let offset, let length), .resolveFault(let handle, let offset, let length):
            writer.write(handle.rawValue)
            writer.write(offset)
            writer.write(length)
        case .detach(let attachment), .attached(let attachment):
            writer.write(attachment.rawValue)
        case .listSegments(let after):
            writer.write(after?.rawValue ?? 0)
        case .listClients, .queryStatus, .done, .subscribe:
            break
        case .invalidate(let id, let offset, let length, let deadline, let reason, let hold):
            writer.write(id.rawValue)
            writer.write(offset)
            writer.write(length)
            writer.write(deadline)
            writer.write(reason.rawValue)
            writer.write(hold)
        case .endInvalidation(let id, let sequence), .acknowledge(let id, let sequence):
            writer.write(id.rawValue)
            writer.write(sequence)
        case .describePlacement(let id, let placement), .describePages(let id, let placement):
            writer.write(id.rawValue)
            writer.write(placement, maximumLength: 256)
        case .invalidateBegin(let id, let offset, let length, let sequence, let reason):
            writer.write(id.rawValue)
            writer.write(offset)
            writer.write(length)
            writer.write(sequence)
            writer.write(reason.rawValue)
        case .invalidateEnd(let id, let offset, let length, let sequence):
            writer.write(id.rawValue)
            writer.write(offset)
            writer.write(length)
            writer.write(sequence)
        case .released(let id, let reason):
            writer.write(id.rawValue)
            writer.write(reason.rawValue)
        case .invalidated(let report):
            report.encode(into: &writer)
        case .welcome(let client, let pid):
            writer.write(client.rawValue)
            writer.write(pid)
        case .granted(let handle, let size, let access):
            writer.write(handle.rawValue)
            writer.write(size)
            writer.write(access.rawValue)
        case .failure(let code, let text):
            writer.write(code.rawValue)
            writer.write(text)
        case .segments(let list, let more):
            writer.write(more)
            writer.write(UInt32(list.count))
            for segment in list { segment.encode(into: &writer) }
        case .clients(let list):
            writer.write(UInt32(list.count))
            for client in list { client.encode(into: &writer) }
        case .status(let status):
            status.encode(into: &writer)
        case .makeAddressSpace(let base, let size, let permit, let name):
            writer.write(base)
            writer.write(size)
            writer.write(permit.rawValue)
            writer.write(name, maximumLength: 256)
        case .claim(let id, let token, let size, let permit, let name):
            writer.write(id?.rawValue ?? 0)
            writer.write(token.high)
            writer.write(token.low)
            writer.write(size)
            writer.write(permit.rawValue)
            writer.write(name, maximumLength: 256)
        case .reportAttachCache(let counters):
            counters.encode(into: &writer)
        case .replaceSegmentFiles(let id):
            writer.write(id.rawValue)
        case .segmentFileReplaced(let id, let access):
            writer.write(id.rawValue)
            writer.write(access.rawValue)
        case .claimAddressSpace(let id, let token, let base, let size, let permit, let name):
            writer.write(id?.rawValue ?? 0)
            writer.write(token.high)
            writer.write(token.low)
            writer.write(base)
            writer.write(size)
            writer.write(permit.rawValue)
            writer.write(name, maximumLength: 256)
        case .rangeBacked(let id, let sequence, let failure, let text, let extents):
            writer.write(id.rawValue)
            writer.write(sequence)
            writer.write(failure?.rawValue ?? 0)
            writer.write(text, maximumLength: 256)
            writer.write(extents)
        case .backRange(let id, let sequence, let start, let length),
             .fillRange(let id, let sequence, let start, let length):
            writer.write(id.rawValue)
            writer.write(sequence)
            writer.write(start)
            writer.write(length)
        case .attachedWindow(let attachment, let fileOffset, let extents):
            writer.write(attachment.rawValue)
            writer.write(fileOffset)
            writer.write(extents)
        case .faultResolved(let extents):
            writer.write(extents)
        case .hintFree(let id, let offset, let length), .freeHintWritten(let id, let offset, let length):
            writer.write(id.rawValue)
            writer.write(offset)
            writer.write(length)
        case .dropFreePages(let id):
            writer.write(id.rawValue)
        case .freePages(let count):
            writer.write(count)
        }
    }

    /// Decodes the payload of a message of `type`, refusing trailing bytes.
    static func decode(type: MessageType, payload: UnsafeRawBufferPointer) throws(FrameDecodingError) -> Message {
        var reader = WireReader(payload)
        let message: Message
        switch type {
        case .hello:
            message = .hello(clientName: try reader.readString("clientName", maximumLength: 256))
        case .make:
            let size = try reader.read(UInt64.self, "size")
            let permit = Permit(rawValue: try reader.read(UInt32.self, "permit"))
            message = .make(size: size, permit: permit, name: try reader.readString("name", maximumLength: 256))
        case .remove:
            message = .remove(SegmentID(rawValue: try reader.read(UInt64.self, "segid")))
        case .get:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            message = .get(id, try reader.readAccessMode())
        case .release:
            message = .release(AccessHandle(rawValue: try reader.read(UInt64.self, "apid")))
        case .attach, .resolveFault:
            let handle = AccessHandle(rawValue: try reader.read(UInt64.self, "apid"))
            let offset = try reader.read(UInt64.self, "offset")
            let length = try reader.read(UInt64.self, "length")
            message = type == .attach ? .attach(handle, offset: offset, length: length)
                                      : .resolveFault(handle, offset: offset, length: length)
        case .detach:
            message = .detach(AttachmentID(rawValue: try reader.read(UInt64.self, "attachment")))
        case .listSegments:
            let after = try reader.read(UInt64.self, "after")
            message = .listSegments(after: after == 0 ? nil : SegmentID(rawValue: after))
        case .listClients:
            message = .listClients
        case .queryStatus:
            message = .queryStatus
        case .welcome:
            let client = ClientID(rawValue: try reader.read(UInt64.self, "clientID"))
            message = .welcome(client, brokerPID: try reader.read(Int32.self, "brokerPID"))
        case .made:
            message = .made(SegmentID(rawValue: try reader.read(UInt64.self, "segid")))
        case .granted:
            let handle = AccessHandle(rawValue: try reader.read(UInt64.self, "apid"))
            let size = try reader.read(UInt64.self, "size")
            message = .granted(handle, size: size, access: try reader.readAccessMode())
        case .attached:
            message = .attached(AttachmentID(rawValue: try reader.read(UInt64.self, "attachment")))
        case .done:
            message = .done
        case .failure:
            let code = ErrorCode(wireValue: try reader.read(UInt16.self, "code"))
            message = .failure(code, try reader.readString("message"))
        case .segments:
            let more = try reader.readBool("more")
            let count = try reader.readCount("segments", minimumRecordSize: 46)  // fixed fields and three empty strings
            var list: [SegmentSummary] = []
            for _ in 0..<count { list.append(try SegmentSummary.decode(from: &reader)) }
            message = .segments(list, more: more)
        case .clients:
            let count = try reader.readCount("clients", minimumRecordSize: 39)  // fixed fields, an empty name, no cache
            var list: [ClientSummary] = []
            for _ in 0..<count { list.append(try ClientSummary.decode(from: &reader)) }
            message = .clients(list)
        case .status:
            message = .status(try BrokerStatus.decode(from: &reader))
        case .subscribe:
            message = .subscribe
        case .invalidate:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            let offset = try reader.read(UInt64.self, "offset")
            let length = try reader.read(UInt64.self, "length")
            let deadline = try reader.read(UInt32.self, "deadline")
            let reason = try reader.readInvalidationReason()
            message = .invalidate(id, offset: offset, length: length, deadlineMilliseconds: deadline, reason: reason,
                                  holdForChange: try reader.readBool("holdForChange"))
        case .endInvalidation:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            message = .endInvalidation(id, sequence: try reader.read(UInt64.self, "sequence"))
        case .describePlacement:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            message = .describePlacement(id, placement: try reader.readString("placement", maximumLength: 256))
        case .describePages:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            message = .describePages(id, pages: try reader.readString("pages", maximumLength: 256))
        case .acknowledge:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            message = .acknowledge(id, sequence: try reader.read(UInt64.self, "sequence"))
        case .invalidateBegin:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            let offset = try reader.read(UInt64.self, "offset")
            let length = try reader.read(UInt64.self, "length")
            let sequence = try reader.read(UInt64.self, "sequence")
            message = .invalidateBegin(id, offset: offset, length: length, sequence: sequence,
                                       reason: try reader.readInvalidationReason())
        case .invalidateEnd:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            let offset = try reader.read(UInt64.self, "offset")
            let length = try reader.read(UInt64.self, "length")
            message = .invalidateEnd(id, offset: offset, length: length, sequence: try reader.read(UInt64.self, "sequence"))
        case .released:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            guard let reason = ReleaseReason(rawValue: try reader.read(UInt8.self, "reason")) else {
                throw .invalidValue(field: "reason")
            }
            message = .released(id, reason: reason)
        case .invalidated:
            message = .invalidated(try InvalidationReport.decode(from: &reader))
        case .makeAddressSpace:
            let base = try reader.read(UInt64.self, "base")
            let size = try reader.read(UInt64.self, "size")
            let permit = Permit(rawValue: try reader.read(UInt32.self, "permit"))
            message = .makeAddressSpace(base: base, size: size, permit: permit,
                                        name: try reader.readString("name", maximumLength: 256))
        case .rangeBacked:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            let sequence = try reader.read(UInt64.self, "sequence")
            let code = try reader.read(UInt16.self, "code")
            let text = try reader.readString("text", maximumLength: 256)
            message = .rangeBacked(id, sequence: sequence, failure: code == 0 ? nil : ErrorCode(wireValue: code),
                                   text: text, extents: try reader.readExtents())
        case .claim:
            let id = try reader.read(UInt64.self, "segid")
            let token = ReclaimToken(high: try reader.read(UInt64.self, "tokenHigh"), low: try reader.read(UInt64.self, "tokenLow"))
            let size = try reader.read(UInt64.self, "size")
            let permit = Permit(rawValue: try reader.read(UInt32.self, "permit"))
            message = .claim(id == 0 ? nil : SegmentID(rawValue: id), token: token, size: size, permit: permit,
                             name: try reader.readString("name", maximumLength: 256))
        case .replaceSegmentFiles:
            message = .replaceSegmentFiles(SegmentID(rawValue: try reader.read(UInt64.self, "segid")))
        case .reportAttachCache:
            message = .reportAttachCache(try AttachCacheCounters.decode(from: &reader))
        case .segmentFileReplaced:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            message = .segmentFileReplaced(id, access: try reader.readAccessMode())
        case .claimAddressSpace:
            let id = try reader.read(UInt64.self, "segid")
            let token = ReclaimToken(high: try reader.read(UInt64.self, "tokenHigh"), low: try reader.read(UInt64.self, "tokenLow"))
            let base = try reader.read(UInt64.self, "base")
            let size = try reader.read(UInt64.self, "size")
            let permit = Permit(rawValue: try reader.read(UInt32.self, "permit"))
            message = .claimAddressSpace(id == 0 ? nil : SegmentID(rawValue: id), token: token, base: base, size: size,
                                         permit: permit, name: try reader.readString("name", maximumLength: 256))
        case .backRange, .fillRange:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            let sequence = try reader.read(UInt64.self, "sequence")
            let start = try reader.read(UInt64.self, "start")
            let length = try reader.read(UInt64.self, "length")
            message = type == .backRange ? .backRange(id, sequence: sequence, start: start, length: length)
                                         : .fillRange(id, sequence: sequence, start: start, length: length)
        case .faultResolved:
            message = .faultResolved(extents: try reader.readExtents())
        case .attachedWindow:
            let attachment = AttachmentID(rawValue: try reader.read(UInt64.self, "attachment"))
            let fileOffset = try reader.read(UInt64.self, "fileOffset")
            message = .attachedWindow(attachment, fileOffset: fileOffset, extents: try reader.readExtents())
        case .hintFree, .freeHintWritten:
            let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
            let offset = try reader.read(UInt64.self, "offset")
            let length = try reader.read(UInt64.self, "length")
            message = type == .hintFree ? .hintFree(id, offset: offset, length: length)
                                        : .freeHintWritten(id, offset: offset, length: length)
        case .dropFreePages:
            message = .dropFreePages(SegmentID(rawValue: try reader.read(UInt64.self, "segid")))
        case .freePages:
            message = .freePages(count: try reader.read(UInt64.self, "count"))
        }
        try reader.finish()
        return message
    }
}

extension WireReader {
    mutating func readAccessMode() throws(FrameDecodingError) -> AccessMode {
        guard let mode = AccessMode(rawValue: try read(UInt8.self, "access")) else {
            throw .invalidValue(field: "access")
        }
        return mode
    }
}

extension WireReader {
    mutating func readInvalidationReason() throws(FrameDecodingError) -> InvalidationReason {
        guard let reason = InvalidationReason(rawValue: try read(UInt8.self, "reason")) else {
            throw .invalidValue(field: "reason")
        }
        return reason
    }
}

extension InvalidationReport {
    func encode(into writer: inout WireWriter) {
        writer.write(segmentID.rawValue)
        writer.write(sequence)
        writer.write(offset)
        writer.write(length)
        writer.write(elapsedMicroseconds)
        writer.write(UInt32(importers.count))
        for importer in importers {
            writer.write(importer.client)
            writer.write(importer.pid)
            writer.write(importer.outcome.rawValue)
            writer.write(importer.elapsedMicroseconds)
        }
    }

    static func decode(from reader: inout WireReader) throws(FrameDecodingError) -> InvalidationReport {
        let segment = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
        let sequence = try reader.read(UInt64.self, "sequence")
        let offset = try reader.read(UInt64.self, "offset")
        let length = try reader.read(UInt64.self, "length")
        let elapsed = try reader.read(UInt64.self, "elapsed")
        let count = try reader.readCount("importers", minimumRecordSize: 21)
        var importers: [ImporterAcknowledgement] = []
        for _ in 0..<count {
            let client = try reader.read(UInt64.self, "client")
            let pid = try reader.read(Int32.self, "pid")
            guard let outcome = ImporterOutcome(rawValue: try reader.read(UInt8.self, "outcome")) else {
                throw .invalidValue(field: "outcome")
            }
            importers.append(ImporterAcknowledgement(client: client, pid: pid, outcome: outcome,
                                                     elapsedMicroseconds: try reader.read(UInt64.self, "elapsed")))
        }
        return InvalidationReport(segment: segment, sequence: sequence, offset: offset, length: length,
                                  elapsedMicroseconds: elapsed, importers: importers)
    }
}

extension SegmentSummary {
    func encode(into writer: inout WireWriter) {
        writer.write(SegmentID(id)?.rawValue ?? 0)
        writer.write(ownerPID)
        writer.write(ownerUID)
        writer.write(size)
        writer.write(Permit(octal: mode)?.rawValue ?? 0)
        writer.write(importers)
        writer.write(attachments)
        writer.write(importerNode)
        writer.write(name, maximumLength: 256)
        writer.write(placement, maximumLength: 256)
        writer.write(pages, maximumLength: 256)
    }

    static func decode(from reader: inout WireReader) throws(FrameDecodingError) -> SegmentSummary {
        let id = SegmentID(rawValue: try reader.read(UInt64.self, "segid"))
        let pid = try reader.read(Int32.self, "ownerPID")
        let uid = try reader.read(UInt32.self, "ownerUID")
        let size = try reader.read(UInt64.self, "size")
        let permit = Permit(rawValue: try reader.read(UInt32.self, "permit"))
        let importers = try reader.read(UInt32.self, "importers")
        let attachments = try reader.read(UInt32.self, "attachments")
        let importerNode = try reader.read(Int32.self, "importerNode")
        let name = try reader.readString("name", maximumLength: 256)
        let placement = try reader.readString("placement", maximumLength: 256)
        let pages = try reader.readString("pages", maximumLength: 256)
        return SegmentSummary(id: id, ownerPID: pid, ownerUID: uid, size: size, permit: permit, name: name,
                              importers: importers, attachments: attachments, placement: placement,
                              importerNode: importerNode, pages: pages)
    }
}

extension ClientSummary {
    func encode(into writer: inout WireWriter) {
        writer.write(id)
        writer.write(pid)
        writer.write(uid)
        writer.write(gid)
        writer.write(segments)
        writer.write(grants)
        writer.write(attachments)
        writer.write(node)
        writer.write(name, maximumLength: 256)
        writer.write(attachCache != nil)
        attachCache?.encode(into: &writer)
    }

    static func decode(from reader: inout WireReader) throws(FrameDecodingError) -> ClientSummary {
        let id = try reader.read(UInt64.self, "id")
        let pid = try reader.read(Int32.self, "pid")
        let uid = try reader.read(UInt32.self, "uid")
        let gid = try reader.read(UInt32.self, "gid")
        let segments = try reader.read(UInt32.self, "segments")
        let grants = try reader.read(UInt32.self, "grants")
        let attachments = try reader.read(UInt32.self, "attachments")
        let node = try reader.read(Int32.self, "node")
        let name = try reader.readString("name", maximumLength: 256)
        let attachCache = try reader.readBool("hasAttachCache") ? try AttachCacheCounters.decode(from: &reader) : nil
        return ClientSummary(id: id, pid: pid, uid: uid, gid: gid, name: name, segments: segments, grants: grants,
                             attachments: attachments, node: node, attachCache: attachCache)
    }
}

extension BrokerStatus {
    func encode(into writer: inout WireWriter) {
        writer.write(protocolVersion)
        writer.write(pid)
        writer.write(uptimeMilliseconds)
        writer.write(clients)
        writer.write(segments)
        writer.write(grants)
        writer.write(attachments)
        writer.write(openDescriptors)
        writer.write(numaNodes)
    }

    static func decode(from reader: inout WireReader) throws(FrameDecodingError) -> BrokerStatus {
        BrokerStatus(
            protocolVersion: try reader.read(UInt16.self, "protocolVersion"),
            pid: try reader.read(Int32.self, "pid"),
            uptimeMilliseconds: try reader.read(UInt64.self, "uptime"),
            clients: try reader.read(UInt32.self, "clients"),
            segments: try reader.read(UInt32.self, "segments"),
            grants: try reader.read(UInt32.self, "grants"),
            attachments: try reader.read(UInt32.self, "attachments"),
            openDescriptors: try reader.read(UInt32.self, "openDescriptors"),
            numaNodes: try reader.read(UInt32.self, "numaNodes"))
    }
}
