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
    /// Urgent data; what a pressure-stall trigger (`MemoryPressureTrigger`) reports.
    public static let priority = PollEvents(rawValue: cxpmem_EPOLLPRI)
}

/// One ready descriptor: what it was registered as and what it is ready for.
public struct PollEvent<Token: RawRepresentable>: Sendable where Token.RawValue == UInt64, Token: Sendable {
    /// The registration's token; nil when epoll's user data decodes to no `Token` (which only a bug
    /// in the token's encoding can cause).
    public var token: Token?
    public var events: PollEvents

    @inlinable
    init(token: Token?, events: PollEvents) {
        self.token = token
        self.events = events
    }
}

/// An epoll instance whose registrations are named by `Token`, a caller's type encoded in epoll's
/// 64-bit user data through its raw value (so no caller shifts or masks bits). Registered descriptors
/// are borrowed from their owners, who close them (and closing one removes it from the set).
public struct EventPoll<Token: RawRepresentable>: ~Copyable where Token.RawValue == UInt64, Token: Sendable {
    @usableFromInline let descriptor: OwnedDescriptor
    /// Reused by every `wait`, which a busy loop calls often.
    @usableFromInline let readyEvents: UnsafeMutableBufferPointer<UInt32>
    @usableFromInline let readyTokens: UnsafeMutableBufferPointer<UInt64>

    /// The corresponding C function is `epoll_create1`.
    public init(capacity: Int = 64) throws(Errno) {
        descriptor = OwnedDescriptor(adopting: try valueOrErrno { cxpmem_epoll_create() })
        readyEvents = .allocate(capacity: capacity)
        readyTokens = .allocate(capacity: capacity)
    }

    deinit {
        readyEvents.deallocate()
        readyTokens.deallocate()
    }

    /// Watches a descriptor this process owns; remove it (or close it) before it goes.
    /// The corresponding C call is `epoll_ctl(EPOLL_CTL_ADD)`.
    public func add(_ watched: borrowing OwnedDescriptor, events: PollEvents, token: Token) throws(Errno) {
        _ = try valueOrErrno { cxpmem_epoll_add(descriptor.rawValue, watched.rawValue, events.rawValue, token.rawValue) }
    }

    /// Changes what a watched descriptor is watched for, and its token.
    /// The corresponding C call is `epoll_ctl(EPOLL_CTL_MOD)`.
    public func modify(_ watched: borrowing OwnedDescriptor, events: PollEvents, token: Token) throws(Errno) {
        _ = try valueOrErrno {
            cxpmem_epoll_modify(descriptor.rawValue, watched.rawValue, events.rawValue, token.rawValue)
        }
    }

    /// Stops watching a descriptor. The corresponding C call is `epoll_ctl(EPOLL_CTL_DEL)`.
    public func remove(_ watched: borrowing OwnedDescriptor) throws(Errno) {
        _ = try valueOrErrno { cxpmem_epoll_remove(descriptor.rawValue, watched.rawValue) }
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever) for ready descriptors; an interrupted wait
    /// returns no events rather than retrying, so the caller can re-check its deadlines.
    /// The corresponding C function is `epoll_wait`.
    ///
    /// Inlinable so that it is specialized for the caller's `Token`: the broker's loop calls it for
    /// every message, and the unspecialized generic code looked up type metadata on each call.
    @inlinable
    public func wait(timeoutMilliseconds: Int32) throws(Errno) -> [PollEvent<Token>] {
        let count = cxpmem_epoll_wait(descriptor.rawValue, readyEvents.baseAddress, readyTokens.baseAddress,
                                      CInt(readyEvents.count), timeoutMilliseconds)
        if count < 0 {
            let code = Errno(rawValue: errno)
            if code == .interrupted { return [] }
            throw code
        }
        var ready: [PollEvent<Token>] = []
        ready.reserveCapacity(Int(count))
        for index in 0..<Int(count) {
            ready.append(PollEvent(token: Token(rawValue: readyTokens[index]), events: PollEvents(rawValue: readyEvents[index])))
        }
        return ready
    }
}
