@testable import XPMEMBrokerCore
import XPMEMWire

/// What the daemon knows while it carries out the core's effects: which peers are connected, which
/// have an event channel, which requests still wait for their reply, which segment files it holds.
/// Every effect is checked against it as it is applied, so an effect the daemon could not carry out
/// honestly (a frame to a peer that left, a second reply, a file it does not hold) stops the fuzzer.
struct DaemonView {
    struct Request: Hashable {
        var peer: PeerID
        var requestID: UInt32
    }

    private(set) var credentials: [PeerID: Credentials] = [:]
    private(set) var subscribed: Set<PeerID> = []
    /// Peers the core asked to close; the daemon ends them after their queued frames.
    private(set) var closing: Set<PeerID> = []
    /// Requests handed to the core and not answered yet.
    private(set) var unanswered: Set<Request> = []
    /// The segments whose files the daemon holds, each with the file it holds for it (a number the
    /// view gives each file it is handed; windows sharing a file have the same).
    private(set) var heldFiles: [SegmentID: Int] = [:]
    private var nextFile = 0
    /// Segments whose current file went to someone read-write: their pages may be written unseen, so
    /// none may be dropped until the file is replaced.
    private(set) var writableFileOut: Set<SegmentID> = []
    /// Every id the broker ever issued, so the scenario can name live and stale ones.
    private(set) var issuedSegments: [SegmentID] = []
    private(set) var issuedHandles: [AccessHandle] = []
    private(set) var issuedAttachments: [AttachmentID] = []

    var connectedPeers: [PeerID] { credentials.keys.sorted() }

    mutating func connected(_ peer: PeerID, _ who: Credentials) { credentials[peer] = who }

    mutating func departed(_ peer: PeerID) {
        credentials[peer] = nil
        subscribed.remove(peer)
        closing.remove(peer)
        unanswered = unanswered.filter { $0.peer != peer }
    }

    mutating func awaitReply(to request: Request) {
        check(!unanswered.contains(request), "request \(request.requestID) of \(request.peer) handed over twice")
        unanswered.insert(request)
    }

    /// Applies `effects` as the daemon would. `request` is the request being handled, if any: only it
    /// may bring segment files to keep or an event channel to adopt.
    mutating func apply(_ effects: [BrokerEffect], core: BrokerCore, handling request: (Request, Message)? = nil) {
        for effect in effects {
            switch effect {
            case .send(let peer, let channel, let requestID, let message, let handOver):
                check(credentials[peer] != nil, "\(message.type) sent to \(peer), which is not connected")
                checkSendable(message)
                switch channel {
                case .events:
                    check(subscribed.contains(peer), "event \(message.type) to \(peer), which has no event channel")
                    check(requestID == 0, "event \(message.type) carries request id \(requestID)")
                    check(isBrokerEvent(message.type), "\(message.type) sent on an event channel")
                case .main:
                    check(message.type.rawValue >= 0x8000, "\(message.type) sent as a reply")
                    check(unanswered.remove(Request(peer: peer, requestID: requestID)) != nil,
                          "\(message.type) sent to \(peer) with request id \(requestID), which no unanswered request of it has")
                }
                if let handOver {
                    checkHandOver(handOver, with: message, to: peer, core: core)
                    if handOver.access == .readWrite { writableFileOut.insert(handOver.segment) }
                }
            case .keepSegmentFiles(let segment, let sharing):
                guard let (_, message) = request, Self.bringsSegmentFiles(message.type) else {
                    fatalError("invariant broken: keepSegmentFiles(\(segment)) outside a request carrying them")
                }
                if case .replaceSegmentFiles(segment) = message {
                    check(sharing == nil, "a replacement of \(segment)'s files shared \(String(describing: sharing))'s")
                    check(heldFiles[segment] != nil, "the files of \(segment) replaced but never held")
                    writableFileOut.remove(segment)
                } else {
                    check(heldFiles[segment] == nil, "the files of \(segment) kept twice")
                    heldFiles[segment] = keptFile(for: segment, sharing: sharing, core: core)
                    issuedSegments.append(segment)
                }
            case .discardSegmentFiles(let segment):
                check(heldFiles.removeValue(forKey: segment) != nil, "discardSegmentFiles(\(segment)) of files not held")
            case .dropPages(let segment, let ranges, let owner):
                check(heldFiles[segment] != nil, "dropPages of \(segment), whose files are not held")
                check(owner.map { core.client(of: $0) == core.registry.segments[segment]?.owner } ?? true,
                      "dropPages of \(segment) names \(String(describing: owner)), not its owner's connection")
                check(!writableFileOut.contains(segment),
                      "dropPages of \(segment), whose file someone holds read-write: their writes would be lost")
                check(!ranges.isEmpty && zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound < $1.lowerBound },
                      "dropPages of \(segment) with ranges that are empty, unsorted or overlapping: \(ranges)")
            case .adoptEventChannel(let peer):
                guard let (asked, message) = request, message == .subscribe, asked.peer == peer else {
                    fatalError("invariant broken: adoptEventChannel(\(peer)) outside its subscribe")
                }
                check(!subscribed.contains(peer), "\(peer) given a second event channel")
                subscribed.insert(peer)
            case .watchProcess(let peer, let pid):
                check(credentials[peer]?.pid == pid, "watchProcess(\(peer), \(pid)) is not that peer's process")
            case .close(let peer, _):
                check(credentials[peer] != nil, "close of \(peer), which is not connected")
                closing.insert(peer)
            case .note:
                break
            }
        }
        if let (asked, message) = request { checkDescriptorsAccounted(message, asked: asked, effects: effects) }
        recordIssuedIDs(effects)
    }

    /// The file the daemon holds for a new segment: the one it holds for `sharing`, which must be a
    /// live window of the same owner over the same file; otherwise the file that came with the request.
    private mutating func keptFile(for segment: SegmentID, sharing: SegmentID?, core: BrokerCore) -> Int {
        guard let sharing else {
            nextFile += 1
            return nextFile
        }
        let new = core.registry.segments[segment], held = core.registry.segments[sharing]
        check(new != nil && held != nil && new?.owner == held?.owner && new?.file != nil && new?.file == held?.file
              && new?.addressSpaceBase != nil && held?.addressSpaceBase != nil,
              "\(segment) shares the files of \(sharing), which is not a window of its owner over the same file")
        guard let file = heldFiles[sharing] else {
            fatalError("invariant broken: \(segment) shares the files of \(sharing), which the daemon does not hold")
        }
        return file
    }

    /// A request's descriptors (a make's two files, a subscribe's socket) are kept exactly when the
    /// request succeeded, and then for the id it answered; otherwise the daemon closes them.
    private func checkDescriptorsAccounted(_ message: Message, asked: Request, effects: [BrokerEffect]) {
        let reply = effects.lazy.compactMap { effect -> Message? in
            guard case .send(asked.peer, .main, asked.requestID, let reply, _) = effect else { return nil }
            return reply
        }.first
        let kept = effects.compactMap { effect -> SegmentID? in
            guard case .keepSegmentFiles(let segment, _) = effect else { return nil }
            return segment
        }
        let adopted = effects.contains { $0 == .adoptEventChannel(asked.peer) }
        switch message {
        case .replaceSegmentFiles(let segment):
            check(kept == (reply == .done ? [segment] : []), "replaceSegmentFiles answered \(String(describing: reply)) and kept \(kept)")
        case .make, .makeAddressSpace, .claim, .claimAddressSpace:
            if case .made(let segment)? = reply {
                check(kept == [segment], "make answered made(\(segment)) but kept the files of \(kept)")
            } else {
                check(kept.isEmpty, "a refused make kept files \(kept)")
            }
        case .subscribe:
            check(adopted == (reply == .done), "subscribe answered \(String(describing: reply)), event channel adopted: \(adopted)")
        default:
            check(kept.isEmpty && !adopted, "\(message.type) kept descriptors it did not carry")
        }
    }

    private static func bringsSegmentFiles(_ type: MessageType) -> Bool {
        [.make, .makeAddressSpace, .claim, .claimAddressSpace, .replaceSegmentFiles].contains(type)
    }

    /// A segment's file travels only with the attach reply it belongs to, or with the news that it
    /// was replaced, as the client's attachments allow, to a client that holds such an attachment,
    /// while the daemon still holds it.
    private func checkHandOver(_ handOver: SegmentFileHandOver, with message: Message, to peer: PeerID, core: BrokerCore) {
        check(heldFiles[handOver.segment] != nil, "the file of \(handOver.segment) handed over but not held")
        let attachmentID: AttachmentID
        switch message {
        case .attached(let id), .attachedWindow(let id, _, _): attachmentID = id
        case .segmentFileReplaced(let segment, let access):
            check(handOver == SegmentFileHandOver(segment: segment, access: access),
                  "hand-over \(handOver) with \(message)")
            let client = core.client(of: peer)
            check(core.registry.attachments.values.contains { $0.client == client && $0.segment == segment && $0.access == access },
                  "the \(access) file of \(segment) sent to \(peer), which maps no such attachment")
            return
        default: fatalError("invariant broken: a segment file handed over with \(message.type)")
        }
        guard let attachment = core.registry.attachments[attachmentID] else {
            fatalError("invariant broken: the file handed over for \(attachmentID), which the registry does not know")
        }
        check(attachment.segment == handOver.segment && attachment.access == handOver.access,
              "hand-over \(handOver) does not match \(attachment)")
        check(core.client(of: peer) == attachment.client, "\(attachmentID) handed to \(peer), not its client")
    }

    private func isBrokerEvent(_ type: MessageType) -> Bool { (0x4000..<0x8000).contains(type.rawValue) }

    /// Whatever the core sends must fit a frame and decode to itself at the other end.
    private func checkSendable(_ message: Message) {
        let frame = Frame(requestID: 7, message: message)
        let bytes = frame.encoded()
        check(bytes.count <= WireProtocol.maximumReplySize, "\(message.type) of \(bytes.count) bytes does not fit a frame")
        check(WireDecodingProperty.decode(bytes) == frame, "\(message.type) does not survive the wire: \(message)")
    }

    private mutating func recordIssuedIDs(_ effects: [BrokerEffect]) {
        for case .send(_, .main, _, let message, _) in effects {
            switch message {
            case .granted(let handle, _, _): issuedHandles.append(handle)
            case .attached(let id), .attachedWindow(let id, _, _): issuedAttachments.append(id)
            default: break
            }
        }
    }
}
