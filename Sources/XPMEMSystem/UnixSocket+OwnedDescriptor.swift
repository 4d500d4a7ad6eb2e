import SystemPackage

/// The socket calls for code above this layer, which holds owned descriptors and never their numbers:
/// the socket is borrowed from its owner, and descriptors passed along are borrowed as swift-system
/// `FileDescriptor`s that must stay open (owned by the caller) until the call returns.
extension UnixSocket {
    /// Sends one message, with `descriptors` attached as `SCM_RIGHTS` (they stay owned by the caller).
    /// Throws `EAGAIN` on a non-blocking socket whose buffer is full. The corresponding C function is `sendmsg`.
    public static func send(
        _ socket: borrowing OwnedDescriptor, bytes: [UInt8], passing descriptors: [FileDescriptor] = []
    ) throws(Errno) {
        try send(socket.rawValue, bytes: bytes, descriptors: descriptors.map(\.rawValue))
    }

    /// Waits for one message and receives it into `buffer` (see the raw form for the errors).
    /// The corresponding C function is `recvmsg`.
    public static func receive(
        _ socket: borrowing OwnedDescriptor, into buffer: UnsafeMutableRawBufferPointer, maximumDescriptors: Int
    ) throws(Errno) -> ReceivedMessage {
        try receive(socket.rawValue, into: buffer, maximumDescriptors: maximumDescriptors)
    }

    /// What a send on a non-blocking socket did.
    public enum SendOutcome: Equatable, Sendable {
        case sent
        /// The socket's buffer is full: nothing was sent; wait until it is writable.
        case wouldBlock
    }

    /// Sends one message on a non-blocking socket, with `descriptors` attached (they stay owned by
    /// the list); a full buffer is an outcome, not an error, since an event loop meets it all the time.
    public static func sendIfRoom(
        on socket: borrowing OwnedDescriptor, bytes: [UInt8], descriptors: borrowing OwnedDescriptorList
    ) throws(Errno) -> SendOutcome {
        do {
            try send(socket.rawValue, bytes: bytes, descriptors: descriptors.rawValues)
            return .sent
        } catch .wouldBlock {
            return .wouldBlock
        }
    }

    /// Receives one message if one is pending, without waiting; nil when none is (the call would
    /// block). A poll loop branches on the answer instead of catching an error.
    /// The corresponding C call is `recvmsg(MSG_DONTWAIT)`.
    public static func receiveIfPending(
        _ socket: borrowing OwnedDescriptor, into buffer: UnsafeMutableRawBufferPointer, maximumDescriptors: Int
    ) throws(Errno) -> ReceivedMessage? {
        do {
            return try receive(socket.rawValue, into: buffer, maximumDescriptors: maximumDescriptors,
                               flags: MessageFlags.dontWait)
        } catch where error == .wouldBlock {
            return nil
        }
    }
}
