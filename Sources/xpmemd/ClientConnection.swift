import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

/// A frame waiting for room in a socket buffer, with duplicates of the descriptors it carries.
final class OutboundFrame {
    let bytes: [UInt8]
    let descriptors: OwnedDescriptorList

    init(bytes: [UInt8], descriptors: OwnedDescriptorList) {
        self.bytes = bytes
        self.descriptors = descriptors
    }
}

/// One socket of a client and the frames it has not yet taken.
final class Channel {
    enum Kind: UInt64 {
        /// Requests and replies.
        case main = 0
        /// Invalidation events to the client, acknowledgements from it.
        case events = 2
    }

    let socket: OwnedDescriptor
    let kind: Kind
    var outbound: [OutboundFrame] = []
    var wantsWritable = false

    init(socket: consuming OwnedDescriptor, kind: Kind) {
        self.socket = socket
        self.kind = kind
    }
}

/// One accepted connection: its sockets, the pidfd that tells when its process dies, and its state.
final class ClientConnection {
    enum State: Equatable {
        /// Connected; only `hello` is accepted.
        case awaitingHello
        /// Said hello; known to the registry as this client.
        case active(ClientID)
        /// Being dropped once its queued frames are sent (after a protocol mismatch, say).
        case closing
    }

    /// epoll tokens are `number << 2 | kind`: 0 main socket, 1 pidfd, 2 event socket.
    static let processHandleKind: UInt64 = 1

    let number: UInt64
    let main: Channel
    var events: Channel?
    let credentials: PeerCredentials
    var processHandle: OwnedDescriptor?
    var state: State = .awaitingHello

    init(number: UInt64, socket: consuming OwnedDescriptor, credentials: PeerCredentials) {
        self.number = number
        self.main = Channel(socket: socket, kind: .main)
        self.credentials = credentials
    }

    var clientID: ClientID? {
        if case .active(let id) = state { return id }
        return nil
    }

    func token(for channel: Channel) -> UInt64 { number << 2 | channel.kind.rawValue }
    var processHandleToken: UInt64 { number << 2 | Self.processHandleKind }
}
