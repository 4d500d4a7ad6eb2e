import Synchronization
@testable import XPMEMBrokerCore
import XPMEMWire

/// Property (b): the input as a sequence of operations on a `BrokerCore` (peers connect, say hello,
/// send requests and events, depart; time passes), each one's effects applied to a `DaemonView` and
/// every invariant checked after each. Ids are mostly picked from those the broker issued (live or
/// stale), so that the fuzzer reaches deep states instead of guessing 64-bit ids.
struct BrokerCoreScenario {
    /// Small limits, so that a few dozen operations reach every quota and every budget.
    static let quotas: BrokerQuotas = {
        var quotas = BrokerQuotas()
        quotas.connectionsPerUID = 4
        quotas.segmentsPerUID = 5
        quotas.bytesPerUID = 24 * page
        quotas.descriptorBudget = 48
        quotas.administratorReserve = 9
        quotas.brokerUID = 999
        return quotas
    }()
    static let limits: RegistryLimits = {
        var limits = RegistryLimits()
        limits.segmentsPerClient = 4
        limits.grantsPerClient = 5
        limits.attachmentsPerClient = 6
        limits.maximumSegmentSize = 64 * page
        return limits
    }()
    static let page: UInt64 = 4096
    /// Who connects: root, the broker's own uid, two users of one group and one of another.
    static let people: [Credentials] = [
        Credentials(pid: 100, uid: 0, gid: 0),
        Credentials(pid: 200, uid: 999, gid: 999),
        Credentials(pid: 300, uid: 1000, gid: 100),
        Credentials(pid: 400, uid: 1001, gid: 100, supplementaryGroups: [200]),
        Credentials(pid: 500, uid: 1002, gid: 200),
    ]
    static let maximumOperations = 96

    var core: BrokerCore
    var daemon = DaemonView()
    var now: UInt64 = 0
    var nextPeer: UInt64 = 1
    var nextRequestID: UInt32 = 1

    init() {
        core = BrokerCore(registry: Registry(limits: Self.limits, randomSource: SegmentIDSource().next),
                          quotas: Self.quotas, facts: BrokerFacts(brokerPID: 1, numaNodes: 2, openDescriptorCount: { 9 }))
    }

    static func run(_ input: inout FuzzBytes) {
        var scenario = BrokerCoreScenario()
        var operations = 0
        while !input.isExhausted && operations < maximumOperations {
            scenario.step(&input)
            BrokerCoreInvariants.checkAll(scenario.core, against: scenario.daemon)
            operations += 1
        }
    }

    mutating func step(_ input: inout FuzzBytes) {
        // A peer the core asked to close is gone before the next input, as the daemon would do it.
        for peer in daemon.closing.sorted() { depart(peer) }
        switch input.byte() % 9 {
        case 0: connect(&input)
        case 1: if let peer = pickPeer(&input) { request(.hello(clientName: "fuzz"), from: peer) }
        case 2, 3:
            if let peer = pickPeer(&input) {
                let message = structuredRequest(&input)
                // The page size the daemon read from a make's file: a memfd's, huge ones (four pages, so
                // that segments within the fuzz's byte quota can have them, and 2 MiB), or what no
                // kernel file has (the core must refuse those).
                let pages = input.pick([nil, Self.page, 4 * Self.page, 2 << 20, 3 * Self.page, Self.page / 4] as [UInt64?])
                // Which file it is: two of them, so that a client's windows share one or use two, and
                // clients' files coincide (after a fork they are the same inode, and must not share).
                let file = input.pick([nil, FileIdentity(device: 1, inode: 1), FileIdentity(device: 1, inode: 2)])
                request(message, from: peer, filePageSize: pages, file: file)
            }
        case 4: if let peer = pickPeer(&input) { rawRequest(&input, from: peer) }
        case 5: if let peer = pickPeer(&input) { event(structuredEvent(&input, from: peer), from: peer) }
        case 6: if let peer = pickPeer(&input) { rawEvent(&input, from: peer) }
        case 7: if let peer = pickPeer(&input) { depart(peer) }
        default: tick(&input)
        }
    }

    // MARK: Operations

    mutating func connect(_ input: inout FuzzBytes) {
        let peer = PeerID(rawValue: nextPeer)
        nextPeer += 1
        let who = input.pick(Self.people)
        let node = input.pick([nil, 0, 1])
        daemon.connected(peer, who)
        daemon.apply(core.peerConnected(peer, credentials: who, node: node), core: core)
        // Refused at once (the descriptor budget): the daemon closes it without telling the core more.
        if core.peers[peer] == nil { depart(peer) }
    }

    mutating func request(_ message: Message, from peer: PeerID, filePageSize: UInt64? = nil, file: FileIdentity? = nil) {
        // Through the wire first, as a client's frame would come.
        let requestID = nextRequestID
        nextRequestID += 1
        guard let frame = WireDecodingProperty.decode(Frame(requestID: requestID, message: message).encoded()) else {
            fatalError("invariant broken: a request the encoder made does not decode: \(message)")
        }
        handle(frame, from: peer, filePageSize: filePageSize, file: file)
    }

    /// A frame as the daemon hands it to the core: a request, with exactly the descriptors it needs.
    mutating func handle(_ frame: Frame, from peer: PeerID, filePageSize: UInt64? = nil, file: FileIdentity? = nil) {
        let asked = DaemonView.Request(peer: peer, requestID: frame.requestID)
        let served = core.peers[peer].map { $0.state != .closing } ?? false
        if served { daemon.awaitReply(to: asked) }
        daemon.apply(core.handle(frame.message, requestID: frame.requestID, from: peer, now: now,
                                 filePageSize: filePageSize, file: file), core: core,
                     handling: (asked, frame.message))
        switch frame.message {
        case .attach, .invalidate, .resolveFault:
            break  // may wait for an invalidation or an exporter
        case .reportAttachCache(let counters):
            check(!daemon.unanswered.contains(asked), "reportAttachCache was not answered at once")
            // A connected client's report is what the clients listing shows for it from then on.
            if let client = core.peers[peer]?.client {
                check(core.registry.clients[client]?.attachCache == counters,
                      "\(client) reported \(counters) but the registry keeps \(String(describing: core.registry.clients[client]?.attachCache))")
            }
        default:
            check(!daemon.unanswered.contains(asked), "\(frame.message.type) was not answered at once")
        }
    }

    /// Bytes from the input as a request's payload, checked the way the daemon checks a frame.
    mutating func rawRequest(_ input: inout FuzzBytes, from peer: PeerID) {
        let type = input.pick(WireDecodingProperty.allTypes)
        let descriptors = Int(input.byte() % 3)
        let requestID = nextRequestID
        nextRequestID += 1
        let bytes = WireDecodingProperty.frameBytes(type: type.rawValue, requestID: requestID,
                                                    payload: input.bytes(upTo: WireProtocol.maximumRequestSize - 16))
        guard let frame = WireDecodingProperty.decode(bytes), frame.message.isRequest,
              descriptors == frame.message.descriptorCount else { return }  // the daemon refuses it itself
        handle(frame, from: peer)
    }

    mutating func event(_ message: Message, from peer: PeerID) {
        daemon.apply(core.event(message, from: peer, now: now), core: core)
    }

    mutating func rawEvent(_ input: inout FuzzBytes, from peer: PeerID) {
        let type = input.pick([MessageType.acknowledge, .rangeBacked])
        let bytes = WireDecodingProperty.frameBytes(type: type.rawValue, requestID: 0, payload: input.bytes(upTo: 4080))
        guard let frame = WireDecodingProperty.decode(bytes) else { return }
        event(frame.message, from: peer)
    }

    mutating func depart(_ peer: PeerID) {
        let effects = core.peerDeparted(peer, reason: "fuzz", now: now)
        daemon.departed(peer)
        daemon.apply(effects, core: core)
    }

    /// A little time, or past the next deadline.
    mutating func tick(_ input: inout FuzzBytes) {
        let choice = input.byte()
        if choice & 1 == 1, let deadline = core.nextDeadline {
            now = max(now, deadline)
        } else {
            now += UInt64(choice) * 1000
        }
        daemon.apply(core.tick(now: now), core: core)
        if choice % 7 == 0 { daemon.apply(core.memoryPressure(), core: core) }
    }

    // MARK: Choices

    mutating func pickPeer(_ input: inout FuzzBytes) -> PeerID? {
        let peers = daemon.connectedPeers
        return peers.isEmpty ? nil : input.pick(peers)
    }

    /// A segment id the broker issued (live or removed), or now and then one it never did.
    mutating func pickSegment(_ input: inout FuzzBytes) -> SegmentID {
        let choice = Int(input.byte())
        let issued = daemon.issuedSegments
        return choice < 250 && !issued.isEmpty ? issued[choice % issued.count] : SegmentID(rawValue: UInt64(choice))
    }

    mutating func pickHandle(_ input: inout FuzzBytes) -> AccessHandle {
        let choice = Int(input.byte())
        let issued = daemon.issuedHandles
        return choice < 250 && !issued.isEmpty ? issued[choice % issued.count] : AccessHandle(rawValue: UInt64(choice))
    }

    mutating func pickAttachment(_ input: inout FuzzBytes) -> AttachmentID {
        let choice = Int(input.byte())
        let known = daemon.issuedAttachments + core.registry.attachments.keys.sorted { $0.rawValue < $1.rawValue }
        return choice < 250 && !known.isEmpty ? known[choice % known.count] : AttachmentID(rawValue: UInt64(choice))
    }

    /// Mostly whole pages in a small segment; now and then anything.
    mutating func pickLength(_ input: inout FuzzBytes) -> UInt64 {
        let choice = input.byte()
        switch choice {
        case 0..<200: return UInt64(choice % 20) * Self.page
        case 200..<250: return UInt64(choice)
        default: return input.integer(UInt64.self)
        }
    }

    mutating func structuredRequest(_ input: inout FuzzBytes) -> Message {
        switch input.byte() % 20 {
        case 0, 1:
            return .make(size: pickLength(&input), permit: pickPermit(&input), name: input.pick(["a", "", "segment"]))
        case 2:
            // Mostly the whole address space less a little; wrapping below zero is a size like any other.
            return .makeAddressSpace(base: pickLength(&input), size: input.pick([AddressSpace.maximumSize, 64 * Self.page])
                                     &- pickLength(&input), permit: pickPermit(&input), name: "as")
        case 3: return .remove(pickSegment(&input))
        case 4, 5: return .get(pickSegment(&input), input.pick([.readOnly, .readWrite]))
        case 6: return .release(pickHandle(&input))
        case 7, 8: return .attach(pickHandle(&input), offset: pickLength(&input), length: pickLength(&input))
        case 9: return .detach(pickAttachment(&input))
        case 10: return input.pick([.listSegments(after: nil), .listClients, .queryStatus, .listSegments(after: pickSegment(&input))])
        case 11: return .subscribe
        case 12:
            return .invalidate(pickSegment(&input), offset: pickLength(&input), length: pickLength(&input),
                               deadlineMilliseconds: UInt32(input.byte()), reason: input.pick([.reuse, .migrate, .remove]),
                               holdForChange: input.byte() & 1 == 1)
        case 13:
            let segment = pickSegment(&input)
            return .endInvalidation(segment, sequence: core.coordinator.sequence(of: segment) &+ UInt64(input.byte() % 3) &- 1)
        case 14:
            let text = input.pick(["node 1", "", "interleave 0,1", "\u{7}", "THP 2 of 4 MiB"])
            return input.byte() & 1 == 0 ? .describePlacement(pickSegment(&input), placement: text)
                                         : .describePages(pickSegment(&input), pages: text)
        case 15:
            // A few tokens, so that the same one comes back (a re-registration) as often as a fresh one.
            let token = ReclaimToken(high: UInt64(input.byte() % 4), low: 7)
            return .claim(input.byte() & 1 == 0 ? nil : pickSegment(&input), token: token, size: pickLength(&input),
                          permit: pickPermit(&input), name: "claimed")
        case 16:
            let token = ReclaimToken(high: UInt64(input.byte() % 4), low: 9)
            return .claimAddressSpace(input.byte() & 1 == 0 ? nil : pickSegment(&input), token: token,
                                      base: pickLength(&input), size: 64 * Self.page &- pickLength(&input),
                                      permit: pickPermit(&input), name: "claimed window")
        case 17:
            return .replaceSegmentFiles(pickSegment(&input))
        case 18:
            let segment = pickSegment(&input)
            return input.pick([.hintFree(segment, offset: pickLength(&input), length: pickLength(&input)),
                               .freeHintWritten(segment, offset: pickLength(&input), length: pickLength(&input)),
                               .dropFreePages(segment)])
        default:
            // Counters as the C library reports them, or any 64-bit values at all.
            return .reportAttachCache(AttachCacheCounters(
                hits: input.integer(UInt64.self), misses: UInt64(input.byte()), capacityEvictions: UInt64(input.byte()),
                pressureEvictions: UInt64(input.byte()), entries: UInt64(input.byte()), bytes: input.integer(UInt64.self)))
        }
    }

    mutating func pickPermit(_ input: inout FuzzBytes) -> Permit {
        Permit(rawValue: input.pick([0o600, 0o644, 0o660, 0o666, 0o640, 0o400, 0o777, 0]))
    }

    /// An acknowledgement of a live invalidation (or a stale one), or an answer to a `backRange`.
    mutating func structuredEvent(_ input: inout FuzzBytes, from peer: PeerID) -> Message {
        if input.byte() & 1 == 0 {
            let segment = pickSegment(&input)
            return .acknowledge(segment, sequence: core.coordinator.sequence(of: segment) &+ UInt64(input.byte() % 3) &- 1)
        }
        let pending = core.pendingBackings.values.sorted { $0.sequence < $1.sequence }
        let choice = Int(input.byte())
        guard !pending.isEmpty, choice < 250 else {
            return .rangeBacked(pickSegment(&input), sequence: UInt64(choice), failure: nil, text: "", extents: [])
        }
        let backing = pending[choice % pending.count]
        let failure: ErrorCode? = input.byte() < 200 ? nil : .internalError
        var extents: [BackedExtent] = []
        var start = backing.start
        for _ in 0..<(input.byte() % 4) {
            start += UInt64(input.byte() % 4) * Self.page
            let length = UInt64(input.byte() % 4) * Self.page
            extents.append(BackedExtent(start: start, length: length))
            start += length
        }
        return .rangeBacked(backing.segment, sequence: backing.sequence, failure: failure, text: "no", extents: extents)
    }
}

/// Segment ids for the registry: 0, 0, 1, 1, 2, 2... so that it must skip zero and ids it already
/// issued, and small ids that a fuzzer can name.
final class SegmentIDSource: Sendable {
    private let draws = Mutex<UInt64>(0)

    var next: @Sendable () -> UInt64 {
        { self.draws.withLock { count in
            defer { count += 1 }
            return count / 2
        } }
    }
}
