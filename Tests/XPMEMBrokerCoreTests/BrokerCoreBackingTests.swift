import Testing
import XPMEMBrokerCore
import XPMEMWire

/// Attaching a window of an exporter's address-space file: the exporter is asked to back the range
/// first, and the importer is answered with what is backed.
struct BrokerCoreBackingTests {
    /// An exporter of its whole address space and an importer holding a grant on it.
    struct Scene {
        var broker = BrokerCoreHarness()
        let exporter: PeerID
        let importer: PeerID
        let segment: SegmentID
        let handle: AccessHandle

        init(subscribedExporter: Bool = true, access: AccessMode = .readWrite) {
            let (exporter, _) = broker.join(People.owner, subscribe: subscribedExporter)
            let (importer, _) = broker.join(People.stranger)
            guard case .made(let segment) = broker.request(
                .makeAddressSpace(base: 0, size: AddressSpace.maximumSize, permit: Permit(rawValue: 0o666), name: "as"),
                from: exporter),
                case .granted(let handle, AddressSpace.maximumSize, access) = broker.request(.get(segment, access), from: importer)
            else { fatalError("make or get refused") }
            self.exporter = exporter
            self.importer = importer
            self.segment = segment
            self.handle = handle
        }

        /// Sends the attach and returns the `backRange` sequence the exporter was sent.
        mutating func attach(offset: UInt64, length: UInt64) -> UInt64? {
            let mark = broker.mark
            #expect(broker.request(.attach(handle, offset: offset, length: length), from: importer) == nil,
                    "answered before the exporter backed the range")
            for case .backRange(segment, let sequence, offset, length) in broker.sent(to: exporter, on: .events, since: mark) {
                return sequence
            }
            return nil
        }
    }

    @Test func theImporterGetsTheBackedExtentsAndTheFileAfterTheExporterBacksTheRange() throws {
        var scene = Scene()
        let address: UInt64 = 0x7f00_0000_0000
        let attached = scene.attach(offset: address, length: 8 * page)
        let sequence = try #require(attached)
        let extents = [BackedExtent(start: address, length: 2 * page),
                       BackedExtent(start: address + 4 * page, length: 4 * page)]
        let mark = scene.broker.mark
        scene.broker.event(.rangeBacked(scene.segment, sequence: sequence, failure: nil, text: "", extents: extents),
                           from: scene.exporter)
        let answer = scene.broker.effects[mark...].compactMap { effect -> (Message, SegmentFileHandOver?)? in
            guard case .send(scene.importer, .main, _, let message, let handOver) = effect else { return nil }
            return (message, handOver)
        }
        guard case .attachedWindow(_, address, extents)? = answer.first?.0 else {
            Issue.record("expected the window, got \(answer)")
            return
        }
        #expect(answer.first?.1 == SegmentFileHandOver(segment: scene.segment, access: .readWrite))
        #expect(scene.broker.core.registry.attachments.count == 1)
    }

    @Test func aFaultAsksTheExporterToFillTheRangeAndAnswersWithExtentsLeavingNoAttachmentBehind() throws {
        var scene = Scene()
        let address: UInt64 = 0x7f00_0020_0000
        var mark = scene.broker.mark
        #expect(scene.broker.request(.resolveFault(scene.handle, offset: address, length: 4 * page), from: scene.importer) == nil,
                "answered before the exporter filled the range")
        var fills: [UInt64] = []
        for case .fillRange(scene.segment, let sequence, address, 4 * page) in scene.broker.sent(to: scene.exporter, on: .events, since: mark) {
            fills.append(sequence)
        }
        let sequence = try #require(fills.first, "the exporter was not asked to fill the range")
        let extents = [BackedExtent(start: address, length: 2 * page)]
        mark = scene.broker.mark
        scene.broker.event(.rangeBacked(scene.segment, sequence: sequence, failure: nil, text: "", extents: extents),
                           from: scene.exporter)
        let answers = scene.broker.sent(to: scene.importer, on: .main, since: mark)
        #expect(answers == [.faultResolved(extents: extents)])
        #expect(scene.broker.core.registry.attachments.isEmpty, "the fault's transient attachment stayed recorded")
    }

    @Test func aFaultOutsideTheSegmentWithAForeignHandleOrTooLongIsRefused() {
        var scene = Scene()
        guard case .failure(.invalidArgument, _) = scene.broker.request(
            .resolveFault(scene.handle, offset: AddressSpace.maximumSize, length: page), from: scene.importer) else {
            Issue.record("a fault past the segment was accepted")
            return
        }
        guard case .failure(.notFound, _) = scene.broker.request(
            .resolveFault(scene.handle, offset: 0, length: page), from: scene.exporter) else {
            Issue.record("a fault through another client's handle was accepted")
            return
        }
        guard case .failure(.invalidArgument, _) = scene.broker.request(
            .resolveFault(scene.handle, offset: 0, length: BrokerCore.maximumFaultLength + page), from: scene.importer) else {
            Issue.record("a fault asking to fill more than a fault needs was accepted")
            return
        }
        #expect(scene.broker.core.registry.attachments.isEmpty)
    }

    @Test func aWindowOfTheAddressSpaceCountsNoBytesAgainstTheQuota() {
        var quotas = BrokerQuotas()
        quotas.bytesPerUID = 4096
        quotas.brokerUID = 0
        var broker = BrokerCoreHarness(quotas: quotas)
        let (exporter, _) = broker.join(People.stranger)
        guard case .made = broker.request(.makeAddressSpace(base: 0, size: AddressSpace.maximumSize,
                                                            permit: Permit(rawValue: 0o600), name: "as"), from: exporter) else {
            Issue.record("an address-space window was refused by the byte quota")
            return
        }
        guard case .failure(.invalidArgument, _) = broker.request(
            .makeAddressSpace(base: page, size: AddressSpace.maximumSize, permit: Permit(rawValue: 0o600), name: "past"),
            from: exporter) else {
            Issue.record("a window past the address space was accepted")
            return
        }
    }

    @Test func theExportersRefusalReachesTheImporterAndTheAttachmentIsForgotten() throws {
        var scene = Scene()
        let attached = scene.attach(offset: 0, length: page)
        let sequence = try #require(attached)
        let mark = scene.broker.mark
        scene.broker.event(.rangeBacked(scene.segment, sequence: sequence, failure: .resourceExhausted, text: "too many",
                                        extents: []), from: scene.exporter)
        guard case .failure(.resourceExhausted, let text) = scene.broker.sent(to: scene.importer, on: .main, since: mark).first else {
            Issue.record("the refusal did not reach the importer")
            return
        }
        #expect(text.contains("too many"))
        #expect(scene.broker.core.registry.attachments.isEmpty)
    }

    @Test func extentsOutsideTheRangeAreRefused() throws {
        var scene = Scene()
        let attached = scene.attach(offset: 4 * page, length: page)
        let sequence = try #require(attached)
        let mark = scene.broker.mark
        scene.broker.event(.rangeBacked(scene.segment, sequence: sequence, failure: nil, text: "",
                                        extents: [BackedExtent(start: 0, length: 64 * page)]), from: scene.exporter)
        #expect(failureCodeOf(scene.broker.sent(to: scene.importer, on: .main, since: mark).first) == .internalError)
        #expect(scene.broker.core.registry.attachments.isEmpty)
    }

    @Test func onlyTheExporterMayAnswerAndOnlyOnce() throws {
        var scene = Scene()
        let attached = scene.attach(offset: 0, length: page)
        let sequence = try #require(attached)
        let mark = scene.broker.mark
        scene.broker.event(.rangeBacked(scene.segment, sequence: sequence, failure: nil, text: "",
                                        extents: [BackedExtent(start: 0, length: page)]), from: scene.importer)
        #expect(scene.broker.sent(to: scene.importer, on: .main, since: mark).isEmpty, "an importer answered for the exporter")
        let answer = Message.rangeBacked(scene.segment, sequence: sequence, failure: nil, text: "",
                                         extents: [BackedExtent(start: 0, length: page)])
        scene.broker.event(answer, from: scene.exporter)
        scene.broker.event(answer, from: scene.exporter)
        #expect(scene.broker.sent(to: scene.importer, on: .main, since: mark).count == 1)
    }

    @Test func anExporterThatDoesNotAnswerFailsTheAttachAtTheDeadline() throws {
        var scene = Scene()
        let attached = scene.attach(offset: 0, length: page)
        _ = try #require(attached)
        #expect(scene.broker.core.nextDeadline == BrokerCore.backingDeadline)
        let mark = scene.broker.mark
        scene.broker.advance(to: BrokerCore.backingDeadline - 1)
        #expect(scene.broker.sent(to: scene.importer, on: .main, since: mark).isEmpty)
        scene.broker.advance(to: BrokerCore.backingDeadline)
        #expect(failureCodeOf(scene.broker.sent(to: scene.importer, on: .main, since: mark).first) == .deadlineMissed)
        #expect(scene.broker.core.nextDeadline == nil)
    }

    @Test func anExporterThatLeavesFailsThePendingAttach() throws {
        var scene = Scene()
        let attached = scene.attach(offset: 0, length: page)
        _ = try #require(attached)
        let mark = scene.broker.mark
        scene.broker.depart(scene.exporter)
        #expect(failureCodeOf(scene.broker.sent(to: scene.importer, on: .main, since: mark).first) == .notFound)
        #expect(scene.broker.sent(to: scene.importer, on: .events, since: mark)
                == [.released(scene.segment, reason: .exporterExited)])
    }

    @Test func anImporterThatLeavesIsForgottenAndTheLateAnswerIgnored() throws {
        var scene = Scene()
        let attached = scene.attach(offset: 0, length: page)
        let sequence = try #require(attached)
        scene.broker.depart(scene.importer)
        let mark = scene.broker.mark
        scene.broker.event(.rangeBacked(scene.segment, sequence: sequence, failure: nil, text: "",
                                        extents: [BackedExtent(start: 0, length: page)]), from: scene.exporter)
        #expect(scene.broker.effects[mark...].isEmpty)
        #expect(scene.broker.core.nextDeadline == nil)
    }

    /// Caught by the fuzz target's "nothing waits, yet a request has no reply" invariant: the attach was
    /// never answered, so a client that pipelines its requests waited for it forever.
    @Test func anAttachWhoseGrantWasReleasedBeforeTheExporterAnsweredIsStillAnswered() throws {
        var scene = Scene()
        let attached = scene.attach(offset: 0, length: page)
        let sequence = try #require(attached)
        #expect(scene.broker.request(.release(scene.handle), from: scene.importer) == .done)
        let mark = scene.broker.mark
        scene.broker.event(.rangeBacked(scene.segment, sequence: sequence, failure: nil, text: "",
                                        extents: [BackedExtent(start: 0, length: page)]), from: scene.exporter)
        #expect(failureCodeOf(scene.broker.sent(to: scene.importer, on: .main, since: mark).first) == .notFound)
        #expect(scene.broker.sent(to: scene.importer, on: .main, since: mark).count == 1)
        #expect(scene.broker.core.registry.attachments.isEmpty)
    }

    @Test func anExporterWithoutAnEventChannelCannotServeAttaches() {
        var scene = Scene(subscribedExporter: false)
        let reply = scene.broker.request(.attach(scene.handle, offset: 0, length: page), from: scene.importer)
        #expect(failureCodeOf(reply) == .notFound)
        #expect(scene.broker.core.registry.attachments.isEmpty)
    }

    @Test func segmentIDsArePositiveAsSignedIntegers() {
        var broker = BrokerCoreHarness(ids: [UInt64.max, 1 << 63, (1 << 63) | 5])
        let (exporter, _) = broker.join(People.owner)
        for _ in 0..<3 {
            let id = broker.make(by: exporter)
            #expect(Int64(bitPattern: id.rawValue) > 0)
        }
    }
}

func failureCodeOf(_ message: Message?) -> ErrorCode? {
    if case .failure(let code, _)? = message { return code }
    return nil
}
