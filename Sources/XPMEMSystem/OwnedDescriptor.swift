@preconcurrency import Glibc
import SystemPackage

/// A file descriptor this process owns: closed exactly once, by `close()` or when the value is dropped.
///
/// Being `~Copyable`, a descriptor cannot be closed twice or used after it was handed on. Code above
/// this layer never sees the number: it borrows the owner, or `fileDescriptor` while the owner is alive.
public struct OwnedDescriptor: ~Copyable, Sendable {
    @usableFromInline let rawValue: CInt

    /// Takes ownership of `rawValue`, which must be an open descriptor nobody else will close.
    init(adopting rawValue: CInt) {
        precondition(rawValue >= 0, "adopting a negative descriptor")
        self.rawValue = rawValue
    }

    /// The descriptor for borrowed use with swift-system; it must not outlive `self`.
    public var fileDescriptor: FileDescriptor { FileDescriptor(rawValue: rawValue) }

    /// Closes the descriptor now. The corresponding C function is `close`.
    public consuming func close() {
        let descriptor = rawValue
        discard self
        OwnedDescriptor.closeOnce(descriptor)
    }

    /// Gives up ownership without closing, for handing the number to code that will close it.
    consuming func relinquish() -> CInt {
        let descriptor = rawValue
        discard self
        return descriptor
    }

    /// A second owned descriptor for the same open file, close-on-exec.
    /// The corresponding C function is `fcntl(F_DUPFD_CLOEXEC)`.
    public func duplicate() throws(Errno) -> OwnedDescriptor {
        let copy = try valueOrErrno { fcntl(rawValue, F_DUPFD_CLOEXEC, 0) }
        return OwnedDescriptor(adopting: copy)
    }

    /// The open file's status flags (`O_RDONLY`, `O_RDWR`, `O_NONBLOCK`...).
    public func statusFlags() throws(Errno) -> CInt {
        try valueOrErrno { fcntl(rawValue, F_GETFL) }
    }

    /// Sets or clears `O_NONBLOCK`.
    public func setNonBlocking(_ on: Bool) throws(Errno) {
        let flags = try statusFlags()
        let wanted = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        if wanted != flags { _ = try valueOrErrno { fcntl(rawValue, F_SETFL, wanted) } }
    }

    /// The file's metadata. The corresponding C function is `fstat`.
    public func status() throws(Errno) -> stat {
        var info = stat()
        _ = try valueOrErrno { fstat(rawValue, &info) }
        return info
    }

    deinit { OwnedDescriptor.closeOnce(rawValue) }

    /// Closes without retrying: Linux frees the number even when close reports EINTR.
    static func closeOnce(_ descriptor: CInt) {
        if Glibc.close(descriptor) == -1 {
            preconditionAcceptable(Errno(rawValue: errno), "close")
        }
    }
}

/// Descriptors that arrived together (for example in one `SCM_RIGHTS` message); those nobody takes are
/// closed when the list goes away, so an unexpected descriptor from a peer can never leak.
public final class OwnedDescriptorList {
    private var descriptors: [CInt]

    init(adopting descriptors: [CInt]) { self.descriptors = descriptors }

    /// An empty list, to gather descriptors that are to travel together.
    public convenience init() { self.init(adopting: []) }

    public var count: Int { descriptors.count }
    public var isEmpty: Bool { descriptors.isEmpty }

    /// The numbers, for borrowed use (such as sending them) while the list still owns them.
    var rawValues: [CInt] { descriptors }

    /// The descriptors for borrowed use with swift-system (such as sending them); they must not
    /// outlive the list.
    public var fileDescriptors: [FileDescriptor] { descriptors.map(FileDescriptor.init(rawValue:)) }

    /// Takes ownership of `descriptor`, after those already in the list.
    public func append(_ descriptor: consuming OwnedDescriptor) {
        descriptors.append(descriptor.relinquish())
    }

    /// Takes ownership of the first remaining descriptor.
    public func takeFirst() -> OwnedDescriptor? {
        guard !descriptors.isEmpty else { return nil }
        return OwnedDescriptor(adopting: descriptors.removeFirst())
    }

    /// Closes every descriptor not yet taken.
    public func closeAll() {
        for descriptor in descriptors { OwnedDescriptor.closeOnce(descriptor) }
        descriptors.removeAll()
    }

    deinit { closeAll() }
}
