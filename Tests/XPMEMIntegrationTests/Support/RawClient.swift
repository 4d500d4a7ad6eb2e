import SystemPackage
import XPMEMSystem
import XPMEMWire

/// A client that speaks the protocol by hand (or not at all), to send the broker what the library
/// never would.
final class RawClient {
    /// nil once the client hung up.
    private var connection: OwnedDescriptor?
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WireProtocol.maximumReplySize, alignment: 16)

    init(_ path: String) throws {
        let socket = try UnixSocket.connect(to: path)
        try UnixSocket.setReceiveTimeout(socket, milliseconds: 5000)
        connection = consume socket
    }

    /// Lends the connected socket to `body`, for what the protocol methods below do not cover
    /// (flooding it, changing its flags); throws `EBADF` after `close`.
    func withSocket<Result: ~Copyable>(_ body: (borrowing OwnedDescriptor) throws -> Result) throws -> Result {
        switch connection {
        case .some(let socket): return try body(socket)
        case .none: throw Errno.badFileDescriptor
        }
    }

    /// Hangs up now (idempotent).
    func close() { connection = nil }

    deinit { buffer.deallocate() }

    /// Sends `bytes` as one message, with `descriptors` attached (they stay the caller's).
    func send(_ bytes: [UInt8], descriptors: [FileDescriptor] = []) throws {
        try withSocket { try UnixSocket.send($0, bytes: bytes, passing: descriptors) }
    }

    func send(_ message: Message, requestID: UInt32 = 1, version: UInt16 = WireProtocol.version,
              descriptors: [FileDescriptor] = []) throws {
        try send(Frame(requestID: requestID, message: message).encoded(version: version), descriptors: descriptors)
    }

    /// The next message as it arrived, descriptors included (waiting up to the receive timeout).
    func receiveMessage() throws -> ReceivedMessage {
        try withSocket { try UnixSocket.receive($0, into: buffer, maximumDescriptors: 4) }
    }

    /// The next frame, or nil when the broker closed the connection.
    func receive() throws -> (frame: Frame, descriptors: Int)? {
        let received = try receiveMessage()
        if received.isEndOfFile { return nil }
        let frame = try Frame.decode(UnsafeRawBufferPointer(rebasing: buffer[..<received.byteCount]))
        return (frame, received.descriptors.count)
    }

    /// Sends a request and returns the reply message (nil if the broker hung up).
    func exchange(_ message: Message, requestID: UInt32 = 1, descriptors: [FileDescriptor] = []) throws -> Message? {
        try send(message, requestID: requestID, descriptors: descriptors)
        return try receive()?.frame.message
    }

    /// Says hello; most requests need it first.
    @discardableResult
    func hello() throws -> Message? { try exchange(.hello(clientName: "raw test client")) }
}

/// The failure code of a reply, if it is one.
func failureCode(_ message: Message?) -> ErrorCode? {
    if case .failure(let code, _) = message { return code }
    return nil
}
