import XPMEMWire

/// Decodes through the public entry point. A helper because `Array.withUnsafeBytes` does not carry
/// typed throws, and every test wants the `FrameDecodingError` itself.
func decodeFrame(_ bytes: [UInt8]) throws(FrameDecodingError) -> Frame {
    let result = bytes.withUnsafeBytes { raw in
        Result { () throws(FrameDecodingError) in try Frame.decode(raw) }
    }
    return try result.get()
}

func decodeHeader(_ bytes: [UInt8]) throws(FrameDecodingError) -> FrameHeader {
    let result = bytes.withUnsafeBytes { raw in
        Result { () throws(FrameDecodingError) in try FrameHeader.decode(raw) }
    }
    return try result.get()
}

extension FixedWidthInteger {
    /// The value's little-endian bytes, written out independently of `WireWriter`.
    var littleEndianBytes: [UInt8] {
        (0..<(Self.bitWidth / 8)).map { UInt8(truncatingIfNeeded: self >> ($0 * 8)) }
    }
}

/// Builds a frame byte by byte, without `Frame.encoded`, so that malformed-input tests control every
/// field, including the ones the encoder would get right.
func handmadeFrame(
    type: UInt16, requestID: UInt32 = 1, payload: [UInt8], declaredLength: UInt32? = nil,
    magic: UInt32 = WireProtocol.magic, version: UInt16 = WireProtocol.version
) -> [UInt8] {
    magic.littleEndianBytes + version.littleEndianBytes + type.littleEndianBytes + requestID.littleEndianBytes
        + (declaredLength ?? UInt32(payload.count)).littleEndianBytes + payload
}

/// The payload of an encoded frame (everything after the header).
func payload(of frame: [UInt8]) -> [UInt8] { Array(frame[FrameHeader.size...]) }

/// At least one example of every message, with edge values: empty and non-ASCII strings, empty and
/// non-empty lists, extreme integers.
enum WireSamples {
    static let segment = SegmentID(rawValue: 0x8877_6655_4433_2211)

    static let segmentSummaries = [
        // An empty name, placement and pages make this the smallest possible record.
        SegmentSummary(id: segment, ownerPID: 1, ownerUID: 0, size: 4096, permit: Permit(rawValue: 0o600), name: "",
                       importers: 0, attachments: 0, placement: "", pages: ""),
        SegmentSummary(id: SegmentID(rawValue: UInt64.max), ownerPID: Int32.max, ownerUID: UInt32.max,
                       size: 1 << 40, permit: Permit(rawValue: 0o666), name: "matrix ∑ weights",
                       importers: 3, attachments: UInt32.max, placement: "interleave 0,1,2,3", importerNode: 3,
                       pages: "THP 1048574 of 1048576 MiB"),
    ]

    static let clientSummaries = [
        ClientSummary(id: 1, pid: 100, uid: 1000, gid: 1000, name: "", segments: 0, grants: 0, attachments: 0),
        ClientSummary(id: UInt64.max, pid: Int32.max, uid: UInt32.max, gid: 0, name: "xpmemctl", segments: 2,
                      grants: 5, attachments: 7, node: 1),
        ClientSummary(id: 3, pid: 300, uid: 1000, gid: 1000, name: "libxpmem app", segments: 0, grants: 1, attachments: 4,
                      attachCache: AttachCacheCounters(hits: 10, misses: 4, capacityEvictions: 1, pressureEvictions: 2,
                                                       entries: 3, bytes: 3 << 20)),
    ]

    static let report = InvalidationReport(
        segment: segment, sequence: 7, offset: 8192, length: 4096, elapsedMicroseconds: 1234,
        importers: [
            ImporterAcknowledgement(client: 2, pid: 200, outcome: .acknowledged, elapsedMicroseconds: 10),
            ImporterAcknowledgement(client: 3, pid: -1, outcome: .exited, elapsedMicroseconds: 0),
            ImporterAcknowledgement(client: 4, pid: 400, outcome: .missedDeadline, elapsedMicroseconds: UInt64.max),
            ImporterAcknowledgement(client: 5, pid: 500, outcome: .notSubscribed, elapsedMicroseconds: 0),
        ])

    static let messages: [Message] = [
        .hello(clientName: "importer"),
        .hello(clientName: ""),
        .make(size: 1 << 21, permit: Permit(rawValue: 0o640), name: "weights ü"),
        .remove(segment),
        .get(segment, .readOnly),
        .get(segment, .readWrite),
        .release(AccessHandle(rawValue: 7)),
        .attach(AccessHandle(rawValue: 7), offset: 4096, length: UInt64.max),
        .detach(AttachmentID(rawValue: 9)),
        .listSegments(after: nil),
        .listSegments(after: segment),
        .listClients,
        .queryStatus,
        .subscribe,
        .invalidate(segment, offset: 8192, length: 4096, deadlineMilliseconds: 250, reason: .migrate,
                    holdForChange: true),
        .invalidate(segment, offset: 0, length: 1 << 20, deadlineMilliseconds: UInt32.max,
                    reason: .requestedByOperator, holdForChange: false),
        .endInvalidation(segment, sequence: 3),
        .describePlacement(segment, placement: "interleave 0,1"),
        .acknowledge(segment, sequence: 1),
        .invalidateBegin(segment, offset: 0, length: 4096, sequence: 5, reason: .discard),
        .invalidateBegin(segment, offset: 0, length: 4096, sequence: 7, reason: .revoke),
        .invalidateEnd(segment, offset: 0, length: 4096, sequence: 5),
        .released(segment, reason: .exporterExited),
        .released(segment, reason: .deadlineMissed),
        .released(segment, reason: .fileNotDelivered),
        .welcome(ClientID(rawValue: 3), brokerPID: 4242),
        .made(segment),
        .granted(AccessHandle(rawValue: 1), size: 1 << 30, access: .readWrite),
        .granted(AccessHandle(rawValue: UInt64.max), size: 4096, access: .readOnly),
        .attached(AttachmentID(rawValue: 2)),
        .done,
        .failure(.resourceExhausted, "too many segments"),
        .failure(.busy, ""),
        .segments([], more: false),
        .segments(segmentSummaries, more: true),
        .segments([segmentSummaries[0]], more: false),
        .clients([clientSummaries[0]]),
        .clients([]),
        .clients(clientSummaries),
        .status(BrokerStatus(protocolVersion: 1, pid: 77, uptimeMilliseconds: 123_456, clients: 2, segments: 3,
                             grants: 4, attachments: 5, openDescriptors: 6, numaNodes: 2)),
        .invalidated(report),
        .invalidated(InvalidationReport(segment: segment, sequence: 1, offset: 0, length: 4096,
                                        elapsedMicroseconds: 0, importers: [])),
        .makeAddressSpace(base: 0, size: AddressSpace.maximumSize, permit: Permit(rawValue: 0o666), name: "rank 3"),
        .makeAddressSpace(base: 0x7f00_0000_0000, size: 4096, permit: Permit(rawValue: 0o600), name: ""),
        .rangeBacked(segment, sequence: 3, failure: nil, text: "",
                     extents: [BackedExtent(start: 0x1000, length: 0x2000), BackedExtent(start: 0x5000, length: 0x1000)]),
        .rangeBacked(segment, sequence: 4, failure: .resourceExhausted, text: "too many mappings", extents: []),
        .rangeBacked(segment, sequence: 5, failure: nil, text: "",
                     extents: (0..<UInt64(BackedExtent.maximumPerFrame)).map { BackedExtent(start: $0 * 8192, length: 4096) }),
        .claim(nil, token: ReclaimToken(high: 1, low: 2), size: 4096, permit: Permit(rawValue: 0o600), name: ""),
        .claim(segment, token: ReclaimToken(high: .max, low: 0x0123_4567_89ab_cdef), size: 1 << 40,
               permit: Permit(rawValue: 0o644), name: String(repeating: "r", count: 256)),
        .claimAddressSpace(nil, token: ReclaimToken(high: 3, low: 4), base: 0, size: AddressSpace.maximumSize,
                           permit: Permit(rawValue: 0o600), name: "rank 0"),
        .claimAddressSpace(segment, token: ReclaimToken(high: 5, low: .max), base: 0x7f00_0000_0000, size: 4096,
                           permit: Permit(rawValue: 0o666), name: String(repeating: "a", count: 256)),
        .replaceSegmentFiles(segment),
        .reportAttachCache(AttachCacheCounters(hits: UInt64.max, misses: 0, capacityEvictions: 7, pressureEvictions: 9,
                                               entries: 4096, bytes: 1 << 40)),
        .segmentFileReplaced(segment, access: .readOnly),
        .segmentFileReplaced(segment, access: .readWrite),
        .backRange(segment, sequence: 9, start: 0x7ffc_0000_0000, length: 8 << 20),
        .fillRange(segment, sequence: 10, start: 0x7ffc_0020_0000, length: 2 << 20),
        .resolveFault(AccessHandle(rawValue: 6), offset: 0x7ffc_0020_0000, length: 2 << 20),
        .faultResolved(extents: []),
        .faultResolved(extents: [BackedExtent(start: 0x7ffc_0020_0000, length: 0x1000)]),
        .attachedWindow(AttachmentID(rawValue: 12), fileOffset: 0x7f00_0000_0000, extents: []),
        .attachedWindow(AttachmentID(rawValue: 13), fileOffset: 0x1000,
                        extents: [BackedExtent(start: 0x1000, length: 0x3000)]),
        .hintFree(segment, offset: 0, length: 4096),
        .hintFree(segment, offset: .max, length: .max),
        .freeHintWritten(segment, offset: 0x4_0000, length: 0x4_0000),
        .dropFreePages(segment),
        .describePages(segment, pages: "THP 254 of 256 MiB"),
        .describePages(segment, pages: ""),
        .freePages(count: 0),
        .freePages(count: .max),
    ]

    /// Every type number the protocol defines, found by asking `MessageType` about each 16-bit value.
    static let allMessageTypes: Set<UInt16> = Set((UInt16.min...UInt16.max).filter { MessageType(rawValue: $0) != nil })
}
