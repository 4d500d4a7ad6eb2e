@preconcurrency import Glibc
import CXPMEMShim
import SystemPackage

/// Readiness conditions for `EventPoll`.
public struct PollEvents: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let readable = PollEvents(rawValue: cxpmem_EPOLLIN)
    public static let writable = PollEvents(rawValue: cxpmem_EPOLLOUT)
    public static let error = PollEvents(rawValue: cxpmem_EPOLLERR)
    public static let hangUp = PollEvents(rawValue: cxpmem_EPOLLHUP)
    public static let peerClosed = PollEvents(rawValue: cxpmem_EPOLLRDHUP)
}

/// One ready descriptor: the token it was registered with and what it is ready for.
public struct PollEvent: Sendable {
    public var token: UInt64
    public var events: PollEvents
}

/// An epoll instance. Registered descriptors are borrowed: the caller closes them (and closing one
/// removes it from the set).
public struct EventPoll: ~Copyable {
    private let descriptor: OwnedDescriptor
    /// Reused by every `wait`, which a busy loop calls often.
    private let readyEvents: UnsafeMutableBufferPointer<UInt32>
    private let readyTokens: UnsafeMutableBufferPointer<UInt64>

    public init(capacity: Int = 64) throws(Errno) {
        descriptor = OwnedDescriptor(adopting: try valueOrErrno { cxpmem_epoll_create() })
        readyEvents = .allocate(capacity: capacity)
        readyTokens = .allocate(capacity: capacity)
    }

    deinit {
        readyEvents.deallocate()
        readyTokens.deallocate()
    }

    public func add(_ fd: CInt, events: PollEvents, token: UInt64) throws(Errno) {
        _ = try valueOrErrno { cxpmem_epoll_add(descriptor.rawValue, fd, events.rawValue, token) }
    }

    public func modify(_ fd: CInt, events: PollEvents, token: UInt64) throws(Errno) {
        _ = try valueOrErrno { cxpmem_epoll_modify(descriptor.rawValue, fd, events.rawValue, token) }
    }

    public func remove(_ fd: CInt) throws(Errno) {
        _ = try valueOrErrno { cxpmem_epoll_remove(descriptor.rawValue, fd) }
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever) for ready descriptors; an interrupted wait
    /// returns no events rather than retrying, so the caller can re-check its deadlines.
    public func wait(timeoutMilliseconds: Int32) throws(Errno) -> [PollEvent] {
        let count = cxpmem_epoll_wait(descriptor.rawValue, readyEvents.baseAddress, readyTokens.baseAddress,
                                      CInt(readyEvents.count), timeoutMilliseconds)
        if count < 0 {
            let code = Errno(rawValue: errno)
            if code == .interrupted { return [] }
            throw code
        }
        if count == 0 { return [] }
        return (0..<Int(count)).map { PollEvent(token: readyTokens[$0], events: PollEvents(rawValue: readyEvents[$0])) }
    }
}
