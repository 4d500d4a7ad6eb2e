import SystemPackage

extension UnixSocket {
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

    /// Receives one message if one is pending (nil if none), without waiting, whatever the socket's
    /// mode. Errors are as for `receive`.
    public static func receiveIfReady(
        on socket: borrowing OwnedDescriptor, into buffer: UnsafeMutableRawBufferPointer, maximumDescriptors: Int
    ) throws(Errno) -> ReceivedMessage? {
        do {
            return try receive(socket.rawValue, into: buffer, maximumDescriptors: maximumDescriptors,
                               flags: MessageFlags.dontWait)
        } catch .wouldBlock {
            return nil
        }
    }
}
