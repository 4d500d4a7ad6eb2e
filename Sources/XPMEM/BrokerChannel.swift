@preconcurrency import Glibc
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

    /// Sends `message` with `descriptors` (borrowed) and waits for its reply.
    func request(_ message: Message, descriptors: [CInt] = []) throws(XPMEMError) -> Reply {
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

    private static func exchange(_ message: Message, _ descriptors: [CInt], _ state: inout State) throws(XPMEMError) -> Reply {
        guard let socket = state.socket?.rawValue else {
            throw XPMEMError(.alreadyClosed, "the connection to the broker was closed")
        }
        let requestID = state.nextRequestID
        state.nextRequestID &+= 1
        do {
            try UnixSocket.send(socket, bytes: Frame(requestID: requestID, message: message).encoded(), descriptors: descriptors)
        } catch {
            throw XPMEMError(.brokerUnavailable, "sending \(message.type) to the broker failed: \(error)", errno: error)
        }
        let received: ReceivedMessage
        do {
            received = try receiveReply(socket, into: state.buffer)
        } catch {
            throw XPMEMError(.brokerUnavailable, "receiving the broker's reply failed: \(error)", errno: error)
        }
        if received.isEndOfFile {
            throw XPMEMError(.brokerUnavailable, "the broker closed the connection")
        }
        guard !received.truncated else { throw XPMEMError(.protocolError, "the broker's reply was too long") }
        let frame: Frame
        do {
            let bytes = UnsafeRawBufferPointer(rebasing: state.buffer[..<received.byteCount])
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
    private static func receiveReply(_ socket: CInt, into buffer: UnsafeMutableRawBufferPointer) throws(Errno)
        -> ReceivedMessage
    {
        var failure: Errno?
        let polled: ReceivedBox? = spinPolicy.spin {
            do throws(Errno) {
                let message = try UnixSocket.receive(socket, into: buffer, maximumDescriptors: 4, flags: CInt(MSG_DONTWAIT))
                return ReceivedBox(message)
            } catch {
                if error != .wouldBlock { failure = error; return ReceivedBox(nil) }
                return nil
            }
        }
        if let failure { throw failure }
        if let polled, let message = polled.take() { return message }
        return try UnixSocket.receive(socket, into: buffer, maximumDescriptors: 4)
    }

    static func unexpected(_ reply: Message, for request: Message) -> XPMEMError {
        XPMEMError(.protocolError, "the broker answered \(request.type) with \(reply.type)")
    }
}

/// Carries a received message out of the spin closure (a `~Copyable` value cannot be a generic argument).
final class ReceivedBox {
    private var message: ReceivedMessage?
    init(_ message: consuming ReceivedMessage?) { self.message = message }
    func take() -> ReceivedMessage? { message.take() }
}
