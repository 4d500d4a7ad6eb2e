@preconcurrency import Glibc

/// Flags for `UnixSocket.receive`.
enum MessageFlags {
    /// Return `EAGAIN` at once when nothing is pending, whatever the socket's blocking mode.
    static let dontWait = CInt(MSG_DONTWAIT)
}
