import SystemPackage
import XPMEMSystem
import XPMEMWire

/// A connection's event channel: the socket on which the broker sends invalidation events, and the
/// thread of the library's own that serves it. User callbacks run on that thread, so they may sleep
/// without stalling the broker or any thread of the application. One per connection generation:
/// after a reconnection a new one serves the same attachment table.
final class EventSubscription: Sendable {
    let table: AttachmentTable
    /// The connection generation whose broker this channel reaches.
    let generation: UInt64
    private let socket: OwnedDescriptor
    /// Called on the listener thread once the channel has ended (the broker went away or dropped us).
    private let ended: @Sendable () -> Void

    /// Hands the broker one end of a new socket pair and starts the listener thread on the other.
    /// - Parameter bound: the generation to bind the `subscribe` request to, nil for a channel not
    ///   installed yet (a reconnection restoring before it publishes the new socket).
    init(channel: BrokerChannel, generation: UInt64, bound: UInt64?, table: AttachmentTable,
         ended: @escaping @Sendable () -> Void) throws(XPMEMError) {
        let pair: SocketPair
        do {
            pair = try UnixSocket.pair()
        } catch {
            throw XPMEMError.system("socketpair for the event channel", error)
        }
        let reply = try channel.request(.subscribe, passing: [pair.second.fileDescriptor], generation: bound)
        guard case .done = reply.message else { throw BrokerChannel.unexpected(reply.message, for: .subscribe) }
        socket = pair.first
        self.table = table
        self.generation = generation
        self.ended = ended
        do {
            try DetachedThread.start { [self] in listen() }
        } catch {
            throw XPMEMError.system("starting the event thread", error)
        }
    }

    /// Serves events until the broker closes the channel (the connection ended), then ends the
    /// windows the broker can no longer end.
    private func listen() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WireProtocol.maximumReplySize, alignment: 16)
        defer { buffer.deallocate() }
        // Attachments with an invalidation window open; only this thread touches it.
        var suspended = SuspendedAttachments()
        while true {
            let received: ReceivedMessage
            do {
                received = try UnixSocket.receive(socket, into: buffer, maximumDescriptors: 1)
            } catch {
                if error == .interrupted { continue }
                break
            }
            if received.isEndOfFile { break }
            guard !received.truncated,
                  let frame = try? Frame.decode(UnsafeRawBufferPointer(rebasing: buffer[..<received.byteCount]))
            else { continue }
            handle(frame.message, file: received.descriptors.takeFirst(), suspended: &suspended)
        }
        endWindowsOfLostBroker(suspended)
        table.allWindowsEnded()
        ended()
    }

    private func handle(_ event: Message, file: consuming OwnedDescriptor?, suspended: inout SuspendedAttachments) {
        switch event {
        case .invalidateBegin(let segment, let offset, let length, let sequence, let reason):
            let (end, overflowed) = offset.addingReportingOverflow(length)
            let ranges = table.rangesForEvent(of: segment, touching: offset..<(overflowed ? .max : end), window: sequence)
            func notice(for range: AttachedRange) -> InvalidationNotice? {
                range.overlap(segmentOffset: offset, length: length).map { overlap in
                    InvalidationNotice(segment: segment, attachment: range.id, sequence: sequence, reason: reason,
                                       offset: overlap.offset, length: overlap.length)
                }
            }
            // Every callback runs before any access is cut: a callback may still read the old bytes.
            // (Two passes over the ranges rather than a list of notices: nothing to allocate.)
            for range in ranges {
                if let willInvalidate = range.handlers.willInvalidate, let notice = notice(for: range) { willInvalidate(notice) }
            }
            for range in ranges {
                guard let notice = notice(for: range) else { continue }
                range.suspend(notice)
                suspended.insert(range)
            }
            send(.acknowledge(segment, sequence: sequence))
        case .invalidateEnd(let segment, _, _, let sequence):
            table.windowEnded(of: segment, sequence: sequence)
            for range in table.ranges(of: segment) {
                guard let notice = range.resume(sequence: sequence) else { continue }
                suspended.windowEnded(on: range)
                range.handlers.didInvalidate?(notice)
            }
        case .segmentFileReplaced(let segment, let access):
            guard let file else { break }
            // Each mapping gets its own descriptor of the file, opened as its access needs.
            for range in table.rangesForEvent(of: segment, touching: nil) where range.protection.contains(.write) == (access == .readWrite) {
                do {
                    range.replaceFile(try file.duplicate())
                } catch {
                    // Without the new file the mapping would go on showing the old one's stale bytes.
                    range.revoke()
                }
            }
        case .released(let segment, let reason):
            table.windowsEnded(of: segment)
            for range in table.rangesForEvent(of: segment, touching: nil) {
                range.revoke()
                suspended.remove(range)
                range.handlers.released?(segment, reason)
            }
        default:
            break
        }
    }

    /// No `end` will come for the windows still open: threads asleep in them would sleep for ever.
    /// Their access is given back with the segment's pages mapped again (the memfd keeps them; the
    /// exporter and this process still hold it), and the application is told.
    private func endWindowsOfLostBroker(_ suspended: SuspendedAttachments) {
        for range in suspended.all {
            let interrupted = range.endAllWindows()
            guard !interrupted.isEmpty else { continue }
            range.handlers.brokerLost?(BrokerLossNotice(segment: range.segment, attachment: range.id,
                                                        interrupted: interrupted))
        }
    }

    private func send(_ message: Message) {
        // A failure means the broker is gone; the next receive sees the end of the channel.
        try? UnixSocket.send(socket, bytes: Frame(requestID: 0, message: message).encoded())
    }
}
