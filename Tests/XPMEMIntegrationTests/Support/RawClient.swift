@preconcurrency import Glibc
import SystemPackage
import XPMEMSystem
import XPMEMWire

/// A client that speaks the protocol by hand (or not at all), to send the broker what the library
/// never would.
final class RawClient {
    private(set) var socket: CInt
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WireProtocol.maximumReplySize, alignment: 16)

    init(_ path: String) throws {
        socket = try UnixSocket.connect(to: path).relinquish()
        try UnixSocket.setReceiveTimeout(OwnedDescriptorBorrow(socket).descriptor, milliseconds: 5000)
    }

    /// Hangs up now (idempotent).
    func close() {
        if socket >= 0 { Glibc.close(socket) }
        socket = -1
    }

    deinit {
        close()
        buffer.deallocate()
    }

    func send(_ bytes: [UInt8], descriptors: [CInt] = []) throws {
        try UnixSocket.send(socket, bytes: bytes, descriptors: descriptors)
    }

    func send(_ message: Message, requestID: UInt32 = 1, version: UInt16 = WireProtocol.version, descriptors: [CInt] = []) throws {
        try send(Frame(requestID: requestID, message: message).encoded(version: version), descriptors: descriptors)
    }

    /// The next frame, or nil when the broker closed the connection.
    func receive() throws -> (frame: Frame, descriptors: Int)? {
        let received = try UnixSocket.receive(socket, into: buffer, maximumDescriptors: 4)
        if received.isEndOfFile { return nil }
        let frame = try Frame.decode(UnsafeRawBufferPointer(rebasing: buffer[..<received.byteCount]))
        return (frame, received.descriptors.count)
    }

    /// Sends a request and returns the reply message (nil if the broker hung up).
    func exchange(_ message: Message, requestID: UInt32 = 1, descriptors: [CInt] = []) throws -> Message? {
        try send(message, requestID: requestID, descriptors: descriptors)
        return try receive()?.frame.message
    }

    /// Says hello; most requests need it first.
    @discardableResult
    func hello() throws -> Message? { try exchange(.hello(clientName: "raw test client")) }
}

/// Lends an `OwnedDescriptor` view of a number without taking ownership (for calls that borrow one).
struct OwnedDescriptorBorrow: ~Copyable {
    var descriptor: OwnedDescriptor
    init(_ raw: CInt) { descriptor = OwnedDescriptor(adopting: raw) }
    deinit { _ = descriptor.relinquish() }
}

/// The failure code of a reply, if it is one.
func failureCode(_ message: Message?) -> ErrorCode? {
    if case .failure(let code, _) = message { return code }
    return nil
}
