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
}
