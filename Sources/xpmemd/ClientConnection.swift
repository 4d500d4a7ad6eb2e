import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

/// A frame waiting for room in a client's socket buffer, with the descriptors it carries.
final class OutboundFrame {
    let bytes: [UInt8]
    let descriptors: OwnedDescriptorList

    init(bytes: [UInt8], descriptors: OwnedDescriptorList) {
        self.bytes = bytes
        self.descriptors = descriptors
    }
}

/// One accepted connection: its socket, the pidfd that tells when its process dies, and the replies
/// it has not yet taken.
final class ClientConnection {
    enum State: Equatable {
        /// Connected; only `hello` is accepted.
        case awaitingHello
        /// Said hello; known to the registry as this client.
        case active(ClientID)
        /// Being dropped once its queued frames are sent (after a protocol mismatch, say).
        case closing
    }

    let number: UInt64
    let socket: OwnedDescriptor
    let credentials: PeerCredentials
    var processHandle: OwnedDescriptor?
    var state: State = .awaitingHello
    var outbound: [OutboundFrame] = []
    var wantsWritable = false

    init(number: UInt64, socket: consuming OwnedDescriptor, credentials: PeerCredentials) {
        self.number = number
        self.socket = socket
        self.credentials = credentials
    }

    var clientID: ClientID? {
        if case .active(let id) = state { return id }
        return nil
    }
}
