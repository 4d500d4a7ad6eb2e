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
final class BrokerChannel: Sendable {
    private struct State: ~Copyable {
        var socket: OwnedDescriptor?
        var nextRequestID: UInt32 = 1
        let buffer: UnsafeMutableRawBufferPointer
    }

    let path: String
    private let state: Mutex<State>

    /// Connects to the broker at `path`.
    init(path: String) throws(XPMEMError) {
        self.path = path
        let socket: OwnedDescriptor
        do {
            socket = try UnixSocket.connect(to: path)
        } catch {
            throw XPMEMError(.brokerUnavailable,
                "no broker answers at \(path) (\(error)); start one with `xpmemd --socket \(path)` or set XPMEM_SOCKET",
                errno: error)
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WireProtocol.maximumReplySize, alignment: 16)
        state = Mutex(State(socket: .some(socket), buffer: buffer))
    }

    deinit {
        state.withLock { $0.buffer.deallocate() }
    }

    /// Sends `message` passing `descriptors` (borrowed: their owners keep them open until this
    /// returns) and waits for its reply.
    func request(_ message: Message, passing descriptors: [FileDescriptor] = []) throws(XPMEMError) -> Reply {
        let result: Result<Reply, XPMEMError> = state.withLock { state in
            Result { () throws(XPMEMError) -> Reply in try Self.exchange(message, descriptors, &state) }
        }
        return try result.get()
    }

    /// Sends a request and expects `.done` back.
    func requestDone(_ message: Message) throws(XPMEMError) {
        let reply = try request(message)
        guard case .done = reply.message else { throw Self.unexpected(reply.message, for: message) }
    }

    /// Closes the socket; later requests fail with `alreadyClosed`.
    func close() {
        state.withLock { state in
            if let socket = state.socket.take() { socket.close() }
        }
    }

    private static func exchange(_ message: Message, _ descriptors: [FileDescriptor], _ state: inout State)
        throws(XPMEMError) -> Reply
    {
        let requestID = state.nextRequestID
        state.nextRequestID &+= 1
        switch state.socket {
        case .some(let socket):
            let received = try send(message, requestID: requestID, passing: descriptors, on: socket,
                                    replyInto: state.buffer)
            return try decodeReply(received, to: requestID, in: state.buffer)
        case .none:
            throw XPMEMError(.alreadyClosed, "the connection to the broker was closed")
        }
    }

    /// Sends one request and receives the message that answers it.
    private static func send(
        _ message: Message, requestID: UInt32, passing descriptors: [FileDescriptor], on socket: borrowing OwnedDescriptor,
        replyInto buffer: UnsafeMutableRawBufferPointer
    ) throws(XPMEMError) -> ReceivedMessage {
        do {
            try UnixSocket.send(socket, bytes: Frame(requestID: requestID, message: message).encoded(), passing: descriptors)
        } catch {
            throw XPMEMError(.brokerUnavailable, "sending \(message.type) to the broker failed: \(error)", errno: error)
        }
        do {
            return try receiveReply(socket, into: buffer)
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

    /// Polls for the reply for a few tens of microseconds (most replies come that fast), then blocks.
    private static func receiveReply(_ socket: borrowing OwnedDescriptor, into buffer: UnsafeMutableRawBufferPointer)
        throws(Errno) -> ReceivedMessage
    {
        let polled = try spinPolicy.spin { () throws(Errno) -> ReceivedMessage? in
            try UnixSocket.receiveIfPending(socket, into: buffer, maximumDescriptors: 4)
        }
        if let polled { return polled }
        return try UnixSocket.receive(socket, into: buffer, maximumDescriptors: 4)
    }

    static func unexpected(_ reply: Message, for request: Message) -> XPMEMError {
        XPMEMError(.protocolError, "the broker answered \(request.type) with \(reply.type)")
    }
}
