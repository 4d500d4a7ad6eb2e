import Testing
import XPMEMBrokerCore
import XPMEMWire

/// `replaceSegmentFiles`: the owner moves a segment to a fresh memfd after an importer missed an
/// invalidation deadline, and every importer still mapping it is sent the new file.
struct BrokerCoreFileReplacementTests {
    /// The events with a file handed over that `peer` was sent since `mark`.
    private func handOvers(_ broker: BrokerCoreHarness, to peer: PeerID, since mark: Int) -> [(Message, SegmentFileHandOver?)] {
        broker.effects[mark...].compactMap { effect in
            guard case .send(peer, .events, _, let message, let handOver) = effect else { return nil }
            return (message, handOver)
        }
    }

    @Test func theLateImporterIsLeftOutAndEveryOtherMapperGetsTheNewFileOpenedAsItsAttachmentsAllow() throws {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (writer, _) = broker.join(People.ownerElsewhere)
        let (reader, _) = broker.join(People.stranger)
        let (both, _) = broker.join(People.superuser)
        let (late, lateClient) = broker.join(People.owner)
        let (deaf, _) = broker.join(People.ownerElsewhere, subscribe: false)
        let segment = broker.make(permit: 0o644, by: exporter)
        _ = broker.attach(segment, access: .readWrite, by: writer)
        _ = broker.attach(segment, access: .readOnly, by: reader)
        _ = broker.attach(segment, access: .readOnly, by: both)
        _ = broker.attach(segment, access: .readWrite, by: both)
        _ = broker.attach(segment, access: .readWrite, by: late)
        _ = broker.attach(segment, access: .readOnly, by: deaf)

        // The late importer never acknowledges: at the deadline its grants go.
        broker.request(.invalidate(segment, offset: 0, length: 4 * page, deadlineMilliseconds: 5, reason: .reuse,
                                   holdForChange: true), from: exporter)
        for peer in [writer, reader, both] { broker.acknowledge(segment, sequence: 1, from: peer) }
        broker.advance(to: 5000)
        #expect(broker.core.registry.grants.values.filter { $0.client == lateClient }.isEmpty)

        let mark = broker.mark
        #expect(broker.request(.replaceSegmentFiles(segment), from: exporter) == .done)
        // The new files are kept before any of them is handed over.
        let firstSend = broker.effects[mark...].firstIndex { if case .send = $0 { true } else { false } }
        let keep = broker.effects[mark...].firstIndex(of: .keepSegmentFiles(segment))
        #expect(keep != nil && firstSend != nil && keep! < firstSend!)
        let readWrite = SegmentFileHandOver(segment: segment, access: .readWrite)
        let readOnly = SegmentFileHandOver(segment: segment, access: .readOnly)
        #expect(handOvers(broker, to: writer, since: mark).map(\.1) == [readWrite])
        #expect(handOvers(broker, to: writer, since: mark).map(\.0) == [.segmentFileReplaced(segment, access: .readWrite)])
        #expect(handOvers(broker, to: reader, since: mark).map(\.1) == [readOnly])
        #expect(handOvers(broker, to: both, since: mark).map(\.1) == [readOnly, readWrite])
        #expect(handOvers(broker, to: late, since: mark).isEmpty, "the revoked importer was sent the new file")
        #expect(handOvers(broker, to: deaf, since: mark).isEmpty, "an importer without an event channel was sent a frame")
        let deafClient = try #require(broker.core.client(of: deaf))
        #expect(broker.core.registry.grants.values.filter { $0.client == deafClient }.isEmpty,
                "an importer that could not be sent the new file kept its grants on the segment")
        #expect(broker.core.registry.attachments.values.filter { $0.client == deafClient }.isEmpty)
        #expect(broker.effects.contains(.note(.segmentFileReplaced(segment, importersTold: 3))))
        // The invalidation is still the exporter's to end.
        let ended = broker.mark
        broker.request(.endInvalidation(segment, sequence: 1), from: exporter)
        #expect(broker.sent(to: writer, on: .events, since: ended)
                    == [.invalidateEnd(segment, offset: 0, length: 4 * page, sequence: 1)])
    }

    @Test func onlyTheOwnerReplacesAndOnlyAMemfdSegment() throws {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (importer, _) = broker.join(People.stranger)
        let segment = broker.make(permit: 0o666, by: exporter)
        _ = broker.attach(segment, access: .readWrite, by: importer)
        let mark = broker.mark
        guard case .failure(.permissionDenied, _) = broker.request(.replaceSegmentFiles(segment), from: importer) else {
            Issue.record("an importer replaced the exporter's file")
            return
        }
        guard case .failure(.notFound, _) = broker.request(.replaceSegmentFiles(SegmentID(rawValue: 77)), from: exporter) else {
            Issue.record("an unknown segment's file was replaced")
            return
        }
        guard case .made(let window) = broker.request(
            .makeAddressSpace(base: 0, size: 64 * page, permit: Permit(rawValue: 0o600), name: "as"), from: exporter),
            case .failure(.invalidArgument, _) = broker.request(.replaceSegmentFiles(window), from: exporter)
        else {
            Issue.record("an address-space window's file was replaced")
            return
        }
        #expect(!broker.effects[mark...].contains(.keepSegmentFiles(segment)))
        #expect(handOvers(broker, to: importer, since: mark).isEmpty)
    }

    @Test func anImporterTheNewFileCouldNotReachIsCutOffAndTold() throws {
        var broker = BrokerCoreHarness()
        let (exporter, _) = broker.join(People.owner)
        let (importer, importerClient) = broker.join(People.stranger)
        let segment = broker.make(permit: 0o666, by: exporter)
        _ = broker.attach(segment, access: .readWrite, by: importer)
        let handOver = SegmentFileHandOver(segment: segment, access: .readWrite)
        var effects = broker.core.fileHandOverFailed(handOver, to: importer)
        #expect(effects.contains(.send(importer, .events, requestID: 0, .released(segment, reason: .fileNotDelivered))))
        #expect(effects.contains(.note(.fileNotDelivered(importerClient, segment, grantsRevoked: 1))))
        #expect(broker.core.registry.grants.values.filter { $0.client == importerClient }.isEmpty)
        #expect(broker.core.registry.attachments.values.filter { $0.client == importerClient }.isEmpty)
        // Told once: a second failure for the same importer finds nothing left to revoke.
        effects = broker.core.fileHandOverFailed(handOver, to: importer)
        #expect(effects.isEmpty)
    }
}
