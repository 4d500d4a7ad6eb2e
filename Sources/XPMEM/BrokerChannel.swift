import Synchronization
import SystemPackage
import XPMEMSystem
import XPMEMWire

/// A reply and the descriptors that came with it.
struct Reply: ~Copyable {
    var message: Message
    var descriptors: OwnedDescriptorList
}

/// The request/reply socket to the broker. One request is in flight at a time; callers on several
/// threads take turns.
///
/// The channel outlives the broker it first reached: when the broker goes away, the socket is closed
/// and requests fail at once with `brokerUnavailable` until the library's reconnection `install`s a
/// socket to the next broker. Each socket is one *generation*; handles and attachments belong to the
/// generation that obtained them, and requests naming them say so (`generation:`), so that one is
/// never sent to a broker that did not issue it (where the same number may mean something else).
final class BrokerChannel: Sendable {
    private struct State: ~Copyable {
        var socket: OwnedDescriptor?
        var nextRequestID: UInt32 = 1
        let buffer: UnsafeMutableRawBufferPointer
        var generation: UInt64 = 1
        /// The last generation number handed to a reconnection attempt (each gets its own).
        var lastReserved: UInt64 = 1
        /// `close()` was called: nothing reconnects.
        var closedByOwner = false
        /// Why there is no socket, for the errors of requests made meanwhile.
        var downReason = ""

        var hasSocket: Bool {
            switch socket {
            case .some: true
            case .none: false
            }
        }
    }

    let path: String
    private let state: Mutex<State>
    /// Told the generation whose socket failed under a request (set by the broker object).
    private let lossHandler = Mutex<(@Sendable (UInt64, String) -> Void)?>(nil)

    /// Connects to the broker at `path`.
    /// - Parameter replyTimeoutMilliseconds: how long a reply may take before the request fails
    ///   (a reconnection's socket, until installed: a socket-activated listener accepts even while no
    ///   broker runs behind it); nil waits for ever.
    init(path: String, replyTimeoutMilliseconds: Int? = nil) throws(XPMEMError) {
        self.path = path
        let socket: OwnedDescriptor
        do {
            socket = try UnixSocket.connect(to: path)
        } catch {
            throw XPMEMError(.brokerUnavailable,
                "no broker answers at \(path) (\(error)); start one with `xpmemd --socket \(path)` or set XPMEM_SOCKET",
                errno: error)
        }
        if let replyTimeoutMilliseconds {
            do {
                try UnixSocket.setReceiveTimeout(socket, milliseconds: replyTimeoutMilliseconds)
            } catch {
                throw XPMEMError.system("setting a reply timeout on the broker socket", error)
            }
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WireProtocol.maximumReplySize, alignment: 16)
        state = Mutex(State(socket: .some(socket), buffer: buffer))
    }

    deinit {
        state.withLock { $0.buffer.deallocate() }
    }

    /// The generation of the current (or, while down, the last) socket.
    var generation: UInt64 { state.withLock { $0.generation } }

    /// Whether a socket is in place (the broker has not been seen to go away since it was installed).
    var isConnected: Bool { state.withLock { $0.hasSocket } }

    var isClosedByOwner: Bool { state.withLock { $0.closedByOwner } }

    func setLossHandler(_ handler: @escaping @Sendable (UInt64, String) -> Void) {
        lossHandler.withLock { $0 = handler }
    }

    /// How a request waits for its reply.
    enum ReplyWait {
        /// Polls a few tens of microseconds (most replies come that fast), then sleeps.
        case pollThenSleep
        /// Sleeps at once: the reply waits for other clients, and polling would take a core from them.
        case sleep

        static func `default`(for message: Message) -> ReplyWait { message.waitsForOtherClients ? .sleep : .pollThenSleep }
    }

    /// Sends `message` passing `descriptors` (borrowed: their owners keep them open until this
    /// returns) and waits for its reply.
    /// - Parameters:
    ///   - generation: the generation the message's handles or attachments belong to; the request
    ///     fails with `brokerUnavailable` without being sent if the socket is of another one.
    ///   - replyWait: how to wait for the reply; by default as the message says (`ReplyWait.default`).
    func request(_ message: Message, passing descriptors: [FileDescriptor] = [], generation: UInt64? = nil,
                 replyWait: ReplyWait? = nil) throws(XPMEMError) -> Reply
    {
        let wait = replyWait ?? .default(for: message)
        var lost: (UInt64, String)? = nil
        let result: Result<Reply, XPMEMError> = state.withLock { state in
            if let generation, generation != state.generation {
                return .failure(XPMEMError(.brokerUnavailable,
                    "\(message.type) names what the broker before the last restart issued; it has not been obtained again from the new broker yet"))
            }
            do throws(XPMEMError) {
                return .success(try self.exchange(message, descriptors, wait, &state))
            } catch {
                if error.code == .brokerUnavailable, let socket = state.socket.take() {
                    // The broker is gone (or broke the connection): every later request fails fast
                    // until a reconnection installs a new socket.
                    socket.close()
                    state.downReason = error.message
                    lost = (state.generation, error.message)
                }
                return .failure(error)
            }
        }
        if let (generation, reason) = lost, let handler = lossHandler.withLock({ $0 }) { handler(generation, reason) }
        return try result.get()
    }

    /// Closes the socket of `generation` if it is still the current one (its event channel ended).
    func markLost(generation: UInt64, reason: String) {
        state.withLock { state in
            guard state.generation == generation, let socket = state.socket.take() else { return }
            socket.close()
            state.downReason = reason
        }
    }

    /// Says why requests fail while there is no socket (reconnecting, or given up).
    func setDownReason(_ reason: String) {
        state.withLock { $0.downReason = reason }
    }

    /// A generation number for a reconnection attempt, never used before: what an attempt that fails
    /// registered is bound to a generation no socket will ever have.
    func reserveGeneration() -> UInt64 {
        state.withLock { state in
            state.lastReserved += 1
            return state.lastReserved
        }
    }

    /// Takes `fresh`'s socket (connected, greeted and restored by the reconnection) as generation
    /// `generation`, from `reserveGeneration`. False, and nothing changes, if the channel was closed
    /// by its owner meanwhile or has a socket.
    func install(_ fresh: BrokerChannel, as generation: UInt64) -> Bool {
        guard let socket = fresh.takeSocket() else { return false }
        // Replies on the connection's socket may take as long as an invalidation's deadline.
        try? UnixSocket.setReceiveTimeout(socket, milliseconds: 0)
        var installed = false
        var leftover: OwnedDescriptor? = .some(socket)
        state.withLock { state in
            guard !state.closedByOwner, !state.hasSocket, generation > state.generation else { return }
            state.socket = leftover.take()
            state.generation = generation
            state.downReason = ""
            installed = true
        }
        if let socket = leftover.take() { socket.close() }
        return installed
    }

    private func takeSocket() -> OwnedDescriptor? {
        state.withLock { state in state.socket.take() }
    }

    /// Sends a request and expects `.done` back.
    func requestDone(_ message: Message, passing descriptors: [FileDescriptor] = []) throws(XPMEMError) {
        let reply = try request(message, passing: descriptors)
        guard case .done = reply.message else { throw Self.unexpected(reply.message, for: message) }
    }

    /// Closes the socket for good; later requests fail with `alreadyClosed` and nothing reconnects.
    func close() {
        state.withLock { state in
            state.closedByOwner = true
            if let socket = state.socket.take() { socket.close() }
        }
    }

    private func exchange(_ message: Message, _ descriptors: [FileDescriptor], _ wait: ReplyWait, _ state: inout State)
        throws(XPMEMError) -> Reply
    {
        let requestID = state.nextRequestID
        state.nextRequestID &+= 1
        switch state.socket {
        case .some(let socket):
            let received = try Self.send(message, requestID: requestID, passing: descriptors, on: socket,
                                    replyInto: state.buffer, wait: wait)
            return try Self.decodeReply(received, to: requestID, in: state.buffer)
        case .none:
            if state.closedByOwner { throw XPMEMError(.alreadyClosed, "the connection to the broker was closed") }
            throw XPMEMError(.brokerUnavailable, "the broker at \(path) is gone (\(state.downReason))")
        }
    }

    /// Sends one request and receives the message that answers it.
    private static func send(
        _ message: Message, requestID: UInt32, passing descriptors: [FileDescriptor], on socket: borrowing OwnedDescriptor,
        replyInto buffer: UnsafeMutableRawBufferPointer, wait: ReplyWait
    ) throws(XPMEMError) -> ReceivedMessage {
        do {
            try UnixSocket.send(socket, bytes: Frame(requestID: requestID, message: message).encoded(), passing: descriptors)
        } catch {
            throw XPMEMError(.brokerUnavailable, "sending \(message.type) to the broker failed: \(error)", errno: error)
        }
        do {
            return try receiveReply(socket, into: buffer, spinning: wait == .pollThenSleep)
        } catch {
            throw XPMEMError(.brokerUnavailable, "receiving the broker's reply failed: \(error)", errno: error)
        }
    }

    /// Checks that `received` is the well-formed reply to request `requestID` and decodes it.
    private static func decodeReply(
        _ received: consuming ReceivedMessage, to requestID: UInt32, in buffer: UnsafeMutableRawBufferPointer
    ) throws(XPMEMError) -> Reply {
        if received.isEndOfFile {
            throw XPMEMError(.brokerUnavailable, "the broker closed the connection")
        }
        guard !received.truncated else { throw XPMEMError(.protocolError, "the broker's reply was too long") }
        let frame: Frame
        do {
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[..<received.byteCount])
            let header = try FrameHeader.decode(bytes)
            guard header.version == WireProtocol.version else {
                throw XPMEMError(.protocolMismatch,
                    "the broker speaks protocol version \(header.version), this library \(WireProtocol.version)")
            }
            frame = try Frame.decode(bytes)
        } catch let error as XPMEMError {
            throw error
        } catch {
            throw XPMEMError(.protocolError, "cannot decode the broker's reply: \(error)")
        }
        if case .failure(let code, let text) = frame.message { throw XPMEMError.fromBroker(code, text) }
        guard frame.requestID == requestID else {
            throw XPMEMError(.protocolError, "reply to request \(frame.requestID) arrived for request \(requestID)")
        }
        guard received.descriptors.count == frame.message.descriptorCount else {
            throw XPMEMError(.protocolError, "\(frame.message.type) came with \(received.descriptors.count) descriptors")
        }
        return Reply(message: frame.message, descriptors: received.descriptors)
    }

    /// How long a request polls for its reply before sleeping (`XPMEM_SPIN_US`, microseconds).
    static let spinPolicy = SpinPolicy.fromEnvironment("XPMEM_SPIN_US", defaultMicroseconds: 50)

    /// Polls for the reply for a few tens of microseconds (most replies come that fast), then blocks;
    /// only blocks when not `spinning`.
    private static func receiveReply(
        _ socket: borrowing OwnedDescriptor, into buffer: UnsafeMutableRawBufferPointer, spinning: Bool
    ) throws(Errno) -> ReceivedMessage {
        if spinning {
            let polled = try spinPolicy.spin { () throws(Errno) -> ReceivedMessage? in
                try UnixSocket.receiveIfPending(socket, into: buffer, maximumDescriptors: 4)
            }
            if let polled { return polled }
        }
        return try UnixSocket.receive(socket, into: buffer, maximumDescriptors: 4)
    }

    static func unexpected(_ reply: Message, for request: Message) -> XPMEMError {
        XPMEMError(.protocolError, "the broker answered \(request.type) with \(reply.type)")
    }
}
