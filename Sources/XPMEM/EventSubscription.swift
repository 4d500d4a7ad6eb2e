@preconcurrency import Glibc
import SystemPackage
import XPMEMSystem
import XPMEMWire

/// A connection's event channel: the socket on which the broker sends invalidation events, and the
/// thread of the library's own that serves it. User callbacks run on that thread, so they may sleep
/// without stalling the broker or any thread of the application.
final class EventSubscription: Sendable {
    let table = AttachmentTable()
    /// The userfaultfd behind `.block`, or nil where the kernel refuses it (all attachments `.revoke`).
    let gate: UserFaultGate?
    private let socket: OwnedDescriptor

    /// Hands the broker one end of a new socket pair and starts the listener thread on the other.
    init(channel: BrokerChannel) throws(XPMEMError) {
        let pair: SocketPair
        do {
            pair = try UnixSocket.pair()
        } catch {
            throw XPMEMError.system("socketpair for the event channel", error)
        }
        let reply = try channel.request(.subscribe, descriptors: [pair.second.rawValue])
        guard case .done = reply.message else { throw BrokerChannel.unexpected(reply.message, for: .subscribe) }
        socket = pair.first
        do {
            gate = UserFaultGate(try UserFaultDescriptor())
        } catch {
            gate = nil
        }
        do {
            try DetachedThread.start { [self] in listen() }
        } catch {
            throw XPMEMError.system("starting the event thread", error)
        }
    }

    /// Serves events until the broker closes the channel (the connection ended).
    private func listen() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WireProtocol.maximumReplySize, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let received: ReceivedMessage
            do {
                received = try UnixSocket.receive(socket.rawValue, into: buffer, maximumDescriptors: 1)
            } catch {
                if error == .interrupted { continue }
                return
            }
            if received.isEndOfFile { return }
            guard !received.truncated,
                  let frame = try? Frame.decode(UnsafeRawBufferPointer(rebasing: buffer[..<received.byteCount]))
            else { continue }
            handle(frame.message)
        }
    }

    private func handle(_ event: Message) {
        switch event {
        case .invalidateBegin(let segment, let offset, let length, let sequence, let reason):
            let affected = table.ranges(of: segment).compactMap { range in
                range.overlap(segmentOffset: offset, length: length).map { (range, $0) }
            }
            for (range, overlap) in affected {
                range.handlers.willInvalidate?(InvalidationNotice(
                    segment: segment, attachment: range.id, sequence: sequence, reason: reason, offset: overlap.offset,
                    length: overlap.length))
            }
            for (range, overlap) in affected {
                range.suspend(sequence: sequence, offset: overlap.offset, length: overlap.length)
            }
            send(.acknowledge(segment, sequence: sequence))
        case .invalidateEnd(let segment, _, _, let sequence):
            for range in table.ranges(of: segment) {
                guard let restored = range.resume(sequence: sequence) else { continue }
                range.handlers.didInvalidate?(InvalidationNotice(
                    segment: segment, attachment: range.id, sequence: sequence, reason: .reuse, offset: restored.offset,
                    length: restored.length))
            }
        case .released(let segment, let reason):
            for range in table.ranges(of: segment) {
                range.revoke()
                range.handlers.released?(segment, reason)
            }
        default:
            break
        }
    }

    private func send(_ message: Message) {
        // A failure means the broker is gone; the next receive sees the end of the channel.
        try? UnixSocket.send(socket.rawValue, bytes: Frame(requestID: 0, message: message).encoded())
    }
}
