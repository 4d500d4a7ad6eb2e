import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

/// A frame waiting for room in a socket buffer, with the descriptors it carries (owned until sent).
final class OutboundFrame {
    let bytes: [UInt8]
    let descriptors: OwnedDescriptorList

    init(bytes: [UInt8], descriptors: OwnedDescriptorList) {
        self.bytes = bytes
        self.descriptors = descriptors
    }
}

/// One socket of a peer, the frames it has not yet taken, and what epoll watches on it.
final class Channel {
    let socket: OwnedDescriptor
    let kind: PeerChannel
    var outbound: [OutboundFrame] = []
    /// What epoll reports for this socket now (hang-ups and errors are always reported).
    var watched: PollEvents = .readable
    /// When the peer's unread frames first reached the pause threshold (broker clock, µs).
    var stalledSince: UInt64?

    init(socket: consuming OwnedDescriptor, kind: PeerChannel) {
        self.socket = socket
        self.kind = kind
    }

    var pollDescriptor: PollToken.PeerDescriptor { kind == .main ? .main : .events }
}

/// One accepted connection: its sockets and the pidfd that tells when its process dies. What the
/// peer may do is the core's business; this holds only what I/O needs.
final class PeerConnection {
    let peer: PeerID
    let main: Channel
    var events: Channel?
    let credentials: PeerCredentials
    var processHandle: OwnedDescriptor?
    /// Set when the connection must end once its queued frames are sent (after a fatal protocol
    /// error, or a refusal); nothing more is read from it.
    var closing: String?

    init(peer: PeerID, socket: consuming OwnedDescriptor, credentials: PeerCredentials) {
        self.peer = peer
        self.main = Channel(socket: socket, kind: .main)
        self.credentials = credentials
    }

    func channel(_ kind: PeerChannel) -> Channel? { kind == .main ? main : events }

    /// Since when the peer has left frames unread past the pause threshold, on either socket.
    var stalledSince: UInt64? { [main, events].compactMap { $0?.stalledSince }.min() }

    func token(for channel: Channel) -> PollToken { .peer(peer, channel.pollDescriptor) }
}
