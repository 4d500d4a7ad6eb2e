import Foundation
import XPMEMWire

/// The seed corpus, made by the encoder rather than typed as hex: one valid frame of every message
/// type for each decoder mode, and a few scenarios that reach invalidations and backings.
enum SeedCorpus {
    static func write(into directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for (name, bytes) in seeds() {
            try Data(bytes).write(to: directory.appendingPathComponent(name))
        }
    }

    static func seeds() -> [(String, [UInt8])] {
        var seeds: [(String, [UInt8])] = []
        for (index, type) in WireDecodingProperty.allTypes.enumerated() {
            let frame = Frame(requestID: 5, message: sample(of: type))
            seeds.append(("frame-\(type)", [0] + frame.encoded()))
            let payload = Array(frame.encoded().dropFirst(FrameHeader.size))
            seeds.append(("payload-\(type)", [1, UInt8(index), 5, 0, 0, 0] + payload))
        }
        seeds += ScenarioScript.seeds
        return seeds
    }

    /// A valid message of each type (the switch is exhaustive: a new type needs a seed).
    static func sample(of type: MessageType) -> Message {
        let segment = SegmentID(rawValue: 0x1234)
        let extents = [BackedExtent(start: 4096, length: 8192)]
        switch type {
        case .hello: return .hello(clientName: "seed")
        case .make: return .make(size: 8192, permit: Permit(rawValue: 0o644), name: "seed")
        case .remove: return .remove(segment)
        case .get: return .get(segment, .readWrite)
        case .release: return .release(AccessHandle(rawValue: 1))
        case .attach: return .attach(AccessHandle(rawValue: 1), offset: 0, length: 4096)
        case .detach: return .detach(AttachmentID(rawValue: 1))
        case .listSegments: return .listSegments(after: segment)
        case .listClients: return .listClients
        case .queryStatus: return .queryStatus
        case .subscribe: return .subscribe
        case .invalidate:
            return .invalidate(segment, offset: 0, length: 4096, deadlineMilliseconds: 100, reason: .reuse, holdForChange: true)
        case .endInvalidation: return .endInvalidation(segment, sequence: 1)
        case .describePlacement: return .describePlacement(segment, placement: "node 1")
        case .makeAddressSpace:
            return .makeAddressSpace(base: 0, size: AddressSpace.maximumSize, permit: Permit(rawValue: 0o600), name: "as")
        case .acknowledge: return .acknowledge(segment, sequence: 1)
        case .rangeBacked: return .rangeBacked(segment, sequence: 1, failure: nil, text: "", extents: extents)
        case .invalidateBegin: return .invalidateBegin(segment, offset: 0, length: 4096, sequence: 1, reason: .migrate)
        case .invalidateEnd: return .invalidateEnd(segment, offset: 0, length: 4096, sequence: 2)
        case .released: return .released(segment, reason: .removed)
        case .backRange: return .backRange(segment, sequence: 1, start: 4096, length: 8192)
        case .welcome: return .welcome(ClientID(rawValue: 1), brokerPID: 42)
        case .made: return .made(segment)
        case .granted: return .granted(AccessHandle(rawValue: 1), size: 8192, access: .readOnly)
        case .attached: return .attached(AttachmentID(rawValue: 1))
        case .done: return .done
        case .failure: return .failure(.permissionDenied, "seed")
        case .segments:
            return .segments([SegmentSummary(id: segment, ownerPID: 1, ownerUID: 1000, size: 8192, permit: Permit(rawValue: 0o644),
                                             name: "seed", importers: 1, attachments: 2)], more: true)
        case .clients:
            return .clients([ClientSummary(id: 1, pid: 2, uid: 1000, gid: 100, name: "seed", segments: 1, grants: 2,
                                           attachments: 3, node: 0)])
        case .status:
            return .status(BrokerStatus(protocolVersion: WireProtocol.version, pid: 1, uptimeMilliseconds: 2, clients: 3,
                                        segments: 4, grants: 5, attachments: 6, openDescriptors: 7, numaNodes: 1))
        case .invalidated:
            return .invalidated(InvalidationReport(segment: segment, sequence: 1, offset: 0, length: 4096, elapsedMicroseconds: 9,
                importers: [ImporterAcknowledgement(client: 2, pid: 3, outcome: .acknowledged, elapsedMicroseconds: 4)]))
        case .attachedWindow: return .attachedWindow(AttachmentID(rawValue: 1), fileOffset: 4096, extents: extents)
        case .claim:
            return .claim(nil, token: ReclaimToken(high: 1, low: 2), size: 8192, permit: Permit(rawValue: 0o600), name: "seed")
        case .claimAddressSpace:
            return .claimAddressSpace(nil, token: ReclaimToken(high: 1, low: 2), base: 0, size: AddressSpace.maximumSize,
                                      permit: Permit(rawValue: 0o600), name: "seed")
        case .replaceSegmentFiles: return .replaceSegmentFiles(segment)
        case .reportAttachCache:
            return .reportAttachCache(AttachCacheCounters(hits: 3, misses: 1, capacityEvictions: 0, pressureEvictions: 1,
                                                          entries: 2, bytes: 8192))
        case .segmentFileReplaced: return .segmentFileReplaced(segment, access: .readWrite)
        case .resolveFault: return .resolveFault(AccessHandle(rawValue: 1), offset: 4096, length: 8192)
        case .fillRange: return .fillRange(segment, sequence: 1, start: 4096, length: 8192)
        case .faultResolved: return .faultResolved(extents: extents)
        case .hintFree: return .hintFree(segment, offset: 4096, length: 8192)
        case .freeHintWritten: return .freeHintWritten(segment, offset: 4096, length: 4096)
        case .dropFreePages: return .dropFreePages(segment)
        case .describePages: return .describePages(segment, pages: "THP 2 of 4 MiB")
        case .freePages: return .freePages(count: 2)
        }
    }
}
