import XPMEMBrokerCore
import XPMEMWire

/// Drives a `BrokerCore` as the daemon would, with peers played by hand and time passed in, and keeps
/// what each peer was sent so that tests can read it like a client.
struct BrokerCoreHarness {
    var core: BrokerCore
    var now: UInt64 = 0
    private var nextPeer: UInt64 = 1
    private var nextRequest: UInt32 = 1
    /// Everything the core told the daemon to do, in order.
    private(set) var effects: [BrokerEffect] = []
    /// Segments whose files the daemon would hold.
    private(set) var segmentsWithFiles: Set<SegmentID> = []
    /// Peers the core asked the daemon to close.
    private(set) var closed: [PeerID] = []

    init(quotas: BrokerQuotas = BrokerQuotas(), ids: [UInt64] = []) {
        core = BrokerCore(registry: makeRegistry(ids: ids), quotas: quotas,
                          facts: BrokerFacts(brokerPID: 42, numaNodes: 1, openDescriptorCount: { 7 }))
    }

    /// Connects a peer without saying hello.
    mutating func connect(_ credentials: Credentials) -> PeerID {
        let peer = PeerID(rawValue: nextPeer)
        nextPeer += 1
        record(core.peerConnected(peer, credentials: credentials, node: nil))
        return peer
    }

    /// Connects, says hello and subscribes; returns the peer and its client id.
    mutating func join(_ credentials: Credentials, subscribe: Bool = true) -> (PeerID, ClientID) {
        let peer = connect(credentials)
        guard case .welcome(let client, _) = request(.hello(clientName: "test"), from: peer) else {
            fatalError("hello was refused")
        }
        if subscribe { _ = request(.subscribe, from: peer) }
        return (peer, client)
    }

    /// Sends a request and returns the reply sent on the peer's main socket for it, if one came at once.
    @discardableResult
    mutating func request(_ message: Message, from peer: PeerID, filePageSize: UInt64? = nil,
                          file: FileIdentity? = nil) -> Message? {
        let id = nextRequest
        nextRequest += 1
        let produced = core.handle(message, requestID: id, from: peer, now: now, filePageSize: filePageSize, file: file)
        record(produced)
        return Self.reply(to: id, for: peer, in: produced)
    }

    /// A frame on the peer's event channel.
    mutating func event(_ message: Message, from peer: PeerID) {
        record(core.event(message, from: peer, now: now))
    }

    mutating func acknowledge(_ segment: SegmentID, sequence: UInt64, from peer: PeerID) {
        record(core.event(.acknowledge(segment, sequence: sequence), from: peer, now: now))
    }

    mutating func depart(_ peer: PeerID, reason: String = "test") {
        record(core.peerDeparted(peer, reason: reason, now: now))
    }

    /// The daemon's memory-pressure trigger fired.
    mutating func memoryPressure() {
        record(core.memoryPressure())
    }

    mutating func advance(to time: UInt64) {
        now = time
        record(core.tick(now: now))
    }

    /// Makes a segment owned by `peer` and returns its id.
    mutating func make(size: UInt64 = 4 * page, permit: UInt32 = 0o644, by peer: PeerID) -> SegmentID {
        guard case .made(let id) = request(.make(size: size, permit: Permit(rawValue: permit), name: "s"), from: peer) else {
            fatalError("make was refused")
        }
        return id
    }

    /// Gets and attaches `segment` for `peer`; returns the grant's handle and the attachment.
    mutating func attach(_ segment: SegmentID, access: AccessMode = .readWrite, offset: UInt64 = 0,
                         length: UInt64 = 4 * page, by peer: PeerID) -> (AccessHandle, AttachmentID) {
        guard case .granted(let handle, _, _) = request(.get(segment, access), from: peer),
              case .attached(let attachment) = request(.attach(handle, offset: offset, length: length), from: peer)
        else { fatalError("get or attach was refused") }
        return (handle, attachment)
    }

    /// Frames sent to `peer` on `channel` since `mark` (an index into `effects`).
    func sent(to peer: PeerID, on channel: PeerChannel, since mark: Int = 0) -> [Message] {
        effects[mark...].compactMap { effect in
            guard case .send(peer, channel, _, let message, _) = effect else { return nil }
            return message
        }
    }

    var mark: Int { effects.count }

    private mutating func record(_ produced: [BrokerEffect]) {
        effects += produced
        for effect in produced {
            switch effect {
            case .keepSegmentFiles(let segment, _): segmentsWithFiles.insert(segment)
            case .discardSegmentFiles(let segment): segmentsWithFiles.remove(segment)
            case .close(let peer, _): closed.append(peer)
            default: break
            }
        }
    }

    private static func reply(to requestID: UInt32, for peer: PeerID, in effects: [BrokerEffect]) -> Message? {
        for case .send(peer, .main, requestID, let message, _) in effects { return message }
        return nil
    }
}
