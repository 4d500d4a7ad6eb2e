@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// A message read from a `SOCK_SEQPACKET` socket.
public struct ReceivedMessage: ~Copyable {
    /// Bytes stored in the buffer.
    public var byteCount: Int
    /// The message was longer than the buffer; the rest was discarded by the kernel.
    public var truncated: Bool
    /// Descriptors that came with the message; the ones nobody takes are closed with the list.
    public var descriptors: OwnedDescriptorList
    /// The peer closed its end (a zero-length read).
    public var isEndOfFile: Bool { byteCount == 0 && !truncated && descriptors.isEmpty }
}

/// Two connected sockets.
@frozen public struct SocketPair: ~Copyable {
    public var first: OwnedDescriptor
    public var second: OwnedDescriptor
}

/// `SOCK_SEQPACKET` Unix sockets: reliable, ordered, message-boundary-preserving, and able to carry
/// descriptors (`SCM_RIGHTS`).
public enum UnixSocket {
    /// The most bytes a path may have (`sun_path` holds 108 including the terminating NUL).
    public static let maximumPathLength = 107

    /// Creates a listening socket at `path`, replacing a stale socket file. The corresponding C
    /// functions are `socket`, `bind` and `listen`.
    public static func listen(at path: String, backlog: CInt = 128) throws(Errno) -> OwnedDescriptor {
        let socket = try makeSocket(nonBlocking: true)
        try withAddress(path) { address, length throws(Errno) in
            _ = try valueOrErrno { bind(socket.rawValue, address, length) }
        }
        _ = try valueOrErrno { Glibc.listen(socket.rawValue, backlog) }
        return socket
    }

    /// Connects to the listening socket at `path`. The corresponding C function is `connect`.
    public static func connect(to path: String) throws(Errno) -> OwnedDescriptor {
        let socket = try makeSocket(nonBlocking: false)
        try withAddress(path) { address, length throws(Errno) in
            _ = try valueOrErrno { Glibc.connect(socket.rawValue, address, length) }
        }
        return socket
    }

    /// A connected pair, for tests and for reference measurements. The corresponding C function is `socketpair`.
    public static func pair() throws(Errno) -> SocketPair {
        var fds: [CInt] = [-1, -1]
        _ = try valueOrErrno { socketpair(AF_UNIX, CInt(SOCK_SEQPACKET.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &fds) }
        return SocketPair(first: OwnedDescriptor(adopting: fds[0]), second: OwnedDescriptor(adopting: fds[1]))
    }

    /// Accepts one pending connection as a non-blocking descriptor, or nil when none is pending.
    public static func accept(on listener: borrowing OwnedDescriptor) throws(Errno) -> OwnedDescriptor? {
        do {
            let raw = try valueOrErrno { cxpmem_accept(listener.rawValue) }
            return OwnedDescriptor(adopting: raw)
        } catch {
            if error == .wouldBlock || error == .resourceTemporarilyUnavailable || error == .connectionAbort {
                return nil
            }
            throw error
        }
    }

    /// Sends one message, with `descriptors` attached as `SCM_RIGHTS` (they stay owned by the caller).
    /// Throws `EAGAIN` on a non-blocking socket whose buffer is full. The corresponding C function is `sendmsg`.
    static func send(
        _ socket: CInt, _ bytes: UnsafeRawBufferPointer, descriptors: [CInt] = []
    ) throws(Errno) {
        var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        var header = msghdr()
        let controlLength = descriptors.isEmpty ? 0 : cxpmem_CMSG_SPACE(descriptors.count * MemoryLayout<CInt>.size)
        try withUnsafeTemporaryAllocation(byteCount: max(controlLength, 1), alignment: MemoryLayout<cmsghdr>.alignment) {
            control throws(Errno) in
            control.initializeMemory(as: UInt8.self, repeating: 0)
            try withUnsafeMutablePointer(to: &iov) { iovPointer throws(Errno) in
                header.msg_iov = iovPointer
                header.msg_iovlen = 1
                if !descriptors.isEmpty {
                    header.msg_control = control.baseAddress
                    header.msg_controllen = controlLength
                    let cmsg = cxpmem_CMSG_FIRSTHDR(&header)!
                    cmsg.pointee.cmsg_level = SOL_SOCKET
                    cmsg.pointee.cmsg_type = cxpmem_SCM_RIGHTS
                    cmsg.pointee.cmsg_len = cxpmem_CMSG_LEN(descriptors.count * MemoryLayout<CInt>.size)
                    let data = UnsafeMutableRawPointer(cxpmem_CMSG_DATA(cmsg)!)
                    for (index, descriptor) in descriptors.enumerated() {
                        data.storeBytes(of: descriptor, toByteOffset: index * MemoryLayout<CInt>.size, as: CInt.self)
                    }
                }
                let sent = try valueOrErrno { sendmsg(socket, &header, CInt(MSG_NOSIGNAL)) }
                // A seqpacket send is all or nothing.
                precondition(sent == bytes.count, "short seqpacket send")
            }
        }
    }

    /// Sends one message held in an array (see the buffer form).
    static func send(_ socket: CInt, bytes: [UInt8], descriptors: [CInt] = []) throws(Errno) {
        let result: Result<Void, Errno> = bytes.withUnsafeBytes { raw in
            Result { () throws(Errno) in try send(socket, raw, descriptors: descriptors) }
        }
        try result.get()
    }

    /// Receives one message into `buffer`, accepting up to `maximumDescriptors` descriptors.
    /// Descriptors arrive close-on-exec. Throws `EAGAIN` when nothing is pending on a non-blocking
    /// socket, `EMSGSIZE` when more descriptors came than allowed, and `EMFILE` when this process ran
    /// out of descriptor numbers to receive them (after closing all that did arrive).
    /// The corresponding C function is `recvmsg`.
    static func receive(
        _ socket: CInt, into buffer: UnsafeMutableRawBufferPointer, maximumDescriptors: Int, flags: CInt = 0
    ) throws(Errno) -> ReceivedMessage {
        var iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        var header = msghdr()
        let controlLength = cxpmem_CMSG_SPACE(max(maximumDescriptors, 1) * MemoryLayout<CInt>.size)
        return try withUnsafeTemporaryAllocation(byteCount: controlLength, alignment: MemoryLayout<cmsghdr>.alignment) {
            control throws(Errno) -> ReceivedMessage in
            try withUnsafeMutablePointer(to: &iov) { iovPointer throws(Errno) -> ReceivedMessage in
                header.msg_iov = iovPointer
                header.msg_iovlen = 1
                header.msg_control = control.baseAddress
                header.msg_controllen = controlLength
                let count = try valueOrErrno { recvmsg(socket, &header, cxpmem_MSG_CMSG_CLOEXEC | flags) }
                var received: [CInt] = []
                var cmsg = cxpmem_CMSG_FIRSTHDR(&header)
                while let current = cmsg {
                    if current.pointee.cmsg_level == SOL_SOCKET && current.pointee.cmsg_type == cxpmem_SCM_RIGHTS {
                        let dataLength = current.pointee.cmsg_len - cxpmem_CMSG_LEN(0)
                        let data = UnsafeRawPointer(cxpmem_CMSG_DATA(current)!)
                        for index in 0..<(dataLength / MemoryLayout<CInt>.size) {
                            received.append(data.loadUnaligned(fromByteOffset: index * MemoryLayout<CInt>.size, as: CInt.self))
                        }
                    }
                    cmsg = cxpmem_CMSG_NXTHDR(&header, current)
                }
                let descriptors = OwnedDescriptorList(adopting: received)
                // The control buffer is rounded up to 8 bytes, so one more descriptor than asked for can
                // fit without MSG_CTRUNC; that counts as too many as well.
                if header.msg_flags & CInt(MSG_CTRUNC) != 0 || received.count > maximumDescriptors {
                    // The kernel closed what did not fit; close what did and report it. Fewer than
                    // asked for yet truncated means this process had no descriptor numbers left.
                    let outOfDescriptors = received.count < maximumDescriptors
                    descriptors.closeAll()
                    throw outOfDescriptors ? Errno.tooManyOpenFiles : Errno.messageTooLong
                }
                return ReceivedMessage(
                    byteCount: count, truncated: header.msg_flags & CInt(MSG_TRUNC) != 0, descriptors: descriptors)
            }
        }
    }

    /// Whether the other end has closed, or shut down its sending side, by now (a poll that does not
    /// wait). Frames it sent before may still wait to be read.
    public static func peerHasHungUp(_ socket: borrowing OwnedDescriptor) -> Bool {
        var request = pollfd(fd: socket.rawValue, events: Int16(cxpmem_EPOLLRDHUP), revents: 0)
        guard poll(&request, 1, 0) >= 0 else { return false }
        return request.revents & Int16(truncatingIfNeeded: Int32(POLLHUP) | Int32(cxpmem_EPOLLRDHUP) | Int32(POLLERR)) != 0
    }

    /// Whether `socket` is a `SOCK_SEQPACKET` Unix-domain socket (checked before trusting a descriptor a
    /// peer sent as a socket). The corresponding C call is `getsockopt(SO_TYPE, SO_DOMAIN)`.
    public static func isSequencedPacketSocket(_ socket: borrowing OwnedDescriptor) -> Bool {
        var type: CInt = 0
        var domain: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(socket.rawValue, SOL_SOCKET, SO_TYPE, &type, &length) == 0 else { return false }
        length = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(socket.rawValue, SOL_SOCKET, SO_DOMAIN, &domain, &length) == 0 else { return false }
        return type == CInt(SOCK_SEQPACKET.rawValue) && domain == AF_UNIX
    }

    /// Sets how long a blocking receive waits before failing with `EAGAIN`.
    public static func setReceiveTimeout(_ socket: borrowing OwnedDescriptor, milliseconds: Int) throws(Errno) {
        var time = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        _ = try valueOrErrno {
            setsockopt(socket.rawValue, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        }
    }

    private static func makeSocket(nonBlocking: Bool) throws(Errno) -> OwnedDescriptor {
        var type = CInt(SOCK_SEQPACKET.rawValue) | CInt(SOCK_CLOEXEC.rawValue)
        if nonBlocking { type |= CInt(SOCK_NONBLOCK.rawValue) }
        return OwnedDescriptor(adopting: try valueOrErrno { socket(AF_UNIX, type, 0) })
    }

    private static func withAddress<R>(
        _ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) throws(Errno) -> R
    ) throws(Errno) -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= maximumPathLength, !bytes.contains(0) else {
            throw Errno.fileNameTooLong
        }
        withUnsafeMutableBytes(of: &address.sun_path) { pathBytes in
            pathBytes.copyBytes(from: bytes)
            pathBytes[bytes.count] = 0
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        return try withUnsafePointer(to: &address) { pointer throws(Errno) in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer throws(Errno) in
                try body(sockaddrPointer, length)
            }
        }
    }
}
