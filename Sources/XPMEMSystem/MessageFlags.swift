@preconcurrency import Glibc

/// Flags for `UnixSocket.receive`.
public enum MessageFlags {
    /// Return `EAGAIN` at once when nothing is pending, whatever the socket's blocking mode.
    public static let dontWait = CInt(MSG_DONTWAIT)
}
