@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// A listening socket handed over by a service manager (systemd's socket activation): descriptor 3,
/// announced by `LISTEN_PID` (this process) and `LISTEN_FDS`. Read without linking libsystemd. With
/// it, the socket outlives the broker: clients that connect while the broker restarts wait in its
/// backlog instead of failing.
public enum SocketActivation {

    /// The first descriptor a service manager passes.
    static let firstDescriptor: CInt = 3

    /// The activated listening socket, or nil when this process was not
    /// socket-activated. Throws when it was, but descriptor 3 is not a listening `SOCK_SEQPACKET`
    /// Unix socket. The variables are cleared so that children do not take the socket for theirs.
    public static func listener() throws(Errno) -> OwnedDescriptor? {
        guard let pid = ThisProcess.environment("LISTEN_PID").flatMap(Int32.init), pid == getpid(),
              let count = ThisProcess.environment("LISTEN_FDS").flatMap(Int.init), count >= 1
        else { return nil }
        unsetenv("LISTEN_PID")
        unsetenv("LISTEN_FDS")
        unsetenv("LISTEN_FDNAMES")
        // Adopt descriptor 3 only if it is open: an owned descriptor's close must not fail.
        _ = try valueOrErrno { fcntl(firstDescriptor, F_GETFD) }
        let socket = OwnedDescriptor(adopting: firstDescriptor)
        var listening: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        _ = try valueOrErrno { getsockopt(socket.rawValue, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) }
        guard listening != 0, UnixSocket.isSequencedPacketSocket(socket) else { throw Errno.notSocket }
        _ = try valueOrErrno { fcntl(socket.rawValue, F_SETFD, FD_CLOEXEC) }
        try socket.setNonBlocking(true)
        return socket
    }

    /// The filesystem path a Unix socket is bound to. The corresponding C function is `getsockname`.
    public static func boundPath(of socket: borrowing OwnedDescriptor) throws(Errno) -> String {
        var address = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        _ = try withUnsafeMutablePointer(to: &address) { pointer throws(Errno) in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw throws(Errno) in
                try valueOrErrno { getsockname(socket.rawValue, raw, &length) }
            }
        }
        return withUnsafeBytes(of: address.sun_path) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}
