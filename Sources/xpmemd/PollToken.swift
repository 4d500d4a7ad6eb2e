import XPMEMBrokerCore

/// What an epoll registration stands for. Encoded into epoll's 64-bit user data in one place (the
/// raw value `EventPoll` stores): `peer << 2 | socket` for a peer's descriptors, and four reserved
/// values below any peer's.
enum PollToken: RawRepresentable, Equatable, Sendable {
    /// A peer's descriptors: its main socket, its process's pidfd, its event socket.
    enum PeerDescriptor: UInt64 {
        case main = 0
        case process = 1
        case events = 2
    }

    case listener
    case signals
    /// The memory pressure-stall trigger (`MemoryPressureTrigger`).
    case memoryPressure
    /// The pidfd of the process the broker stops with (`--exit-with`).
    case owner
    case peer(PeerID, PeerDescriptor)

    /// Peer numbers start here, so that no peer's token collides with the listener's or the signals'.
    static let firstPeerNumber: UInt64 = 1

    var rawValue: UInt64 {
        switch self {
        case .listener: 0
        case .signals: 1
        case .memoryPressure: 2
        case .owner: 3
        case .peer(let peer, let descriptor): peer.rawValue << 2 | descriptor.rawValue
        }
    }

    init?(rawValue: UInt64) {
        switch rawValue {
        case 0: self = .listener
        case 1: self = .signals
        case 2: self = .memoryPressure
        case 3: self = .owner
        default:
            guard let descriptor = PeerDescriptor(rawValue: rawValue & 3), rawValue >> 2 >= Self.firstPeerNumber else {
                return nil
            }
            self = .peer(PeerID(rawValue: rawValue >> 2), descriptor)
        }
    }
}
