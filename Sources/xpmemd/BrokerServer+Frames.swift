import Logging
import SystemPackage
import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

extension BrokerServer {
    /// Reads and handles one frame from one of a peer's sockets, past up to `framesPerWakeUp` frames
    /// that were refused (malformed, or carrying descriptors the broker could not take).
    func readFrames(from channel: Channel, of connection: PeerConnection) {
        for _ in 0..<Self.framesPerWakeUp {
            guard connections[connection.peer] != nil, connection.closing == nil,
                  channel.outbound.count < Self.outboundPauseThreshold
            else { return }
            let received: ReceivedMessage
            do {
                guard let message = try UnixSocket.receiveIfPending(channel.socket, into: receiveBuffer,
                                                                    maximumDescriptors: 4) else { return }
                received = message
            } catch {
                switch error {
                case .messageTooLong:
                    refuse(connection, on: channel, requestID: 0, .malformedFrame,
                           "more descriptors in one frame than any message carries")
                    continue
                case .tooManyOpenFiles, .tooManyOpenFilesInSystem:
                    refuse(connection, on: channel, requestID: 0, .resourceExhausted,
                           "the broker has no descriptors left to receive the ones sent; try again later")
                    continue
                default:
                    drop(connection.peer, reason: "receive failed: \(error)")
                    return
                }
            }
            if received.isEndOfFile {
                drop(connection.peer, reason: channel.kind == .main ? "connection closed" : "event channel closed")
                return
            }
            let bytes = UnsafeRawBufferPointer(rebasing: receiveBuffer[..<received.byteCount])
            guard let frame = checkedFrame(bytes, truncated: received.truncated, on: channel, of: connection) else {
                continue
            }
            if channel.kind == .events {
                handleEvent(frame, descriptors: received.descriptors, from: connection)
            } else {
                handleRequest(frame, descriptors: received.descriptors, from: connection)
            }
            // One frame per readiness: a client waits for each reply before its next request, and an
            // event channel carries one acknowledgement per invalidation, so looking for a second
            // frame would cost nearly every message a receive that finds nothing. Epoll
            // (level-triggered) reports the socket again if more is there.
            return
        }
    }

    /// Decodes one untrusted frame, answering every problem; nil when there is nothing to dispatch.
    private func checkedFrame(
        _ bytes: UnsafeRawBufferPointer, truncated: Bool, on channel: Channel, of connection: PeerConnection
    ) -> Frame? {
        if truncated {
            refuse(connection, on: channel, requestID: 0, .malformedFrame,
                   "frame longer than the \(WireProtocol.maximumRequestSize)-byte limit")
            return nil
        }
        let header: FrameHeader
        do {
            header = try FrameHeader.decode(bytes)
        } catch {
            if case .badMagic = error {
                drop(connection.peer, reason: "not speaking the xpmem protocol")
            } else {
                refuse(connection, on: channel, requestID: 0, .malformedFrame, "bad frame header: \(error)")
            }
            return nil
        }
        guard header.version == WireProtocol.version else {
            refuse(connection, on: channel, requestID: header.requestID, .protocolMismatch,
                "this broker speaks protocol version \(WireProtocol.version) and the client version \(header.version): use a client library and xpmemd from the same release")
            close(connection, reason: "protocol version \(header.version)")
            return nil
        }
        do {
            return try Frame.decode(bytes)
        } catch {
            refuse(connection, on: channel, requestID: header.requestID, .malformedFrame, "cannot decode: \(error)")
            return nil
        }
    }

    /// Checks the descriptors a request carries (they are input like any other), then lets the core decide.
    private func handleRequest(_ frame: Frame, descriptors: OwnedDescriptorList, from connection: PeerConnection) {
        let message = frame.message
        guard message.isRequest else {
            refuse(connection, on: connection.main, requestID: frame.requestID, .malformedFrame, "\(message.type) is not a request")
            return
        }
        guard descriptors.count == message.descriptorCount else {
            refuse(connection, on: connection.main, requestID: frame.requestID, .malformedFrame,
                   "\(message.type) carries \(message.descriptorCount) descriptors, this frame \(descriptors.count)")
            return
        }
        let incoming = IncomingDescriptors()
        do throws(BrokerError) {
            switch message {
            case .make(let size, _, _), .claim(_, _, let size, _, _):
                guard let writable = descriptors.takeFirst(), let readable = descriptors.takeFirst() else {
                    throw BrokerError(.malformedFrame, "\(message.type) needs two descriptors")
                }
                incoming.segmentFiles = try SegmentFiles.validate(readWrite: writable, readOnly: readable,
                                                                  size: .exactly(size))
            case .replaceSegmentFiles(let id):
                guard let writable = descriptors.takeFirst(), let readable = descriptors.takeFirst() else {
                    throw BrokerError(.malformedFrame, "replaceSegmentFiles needs two descriptors")
                }
                // As long as the segment, exactly: importers map all of it, and a shorter file would
                // make their touches past its end raise SIGBUS. Whether the sender may is the core's call.
                guard let segment = core.registry.segments[id] else {
                    throw BrokerError(.notFound, "no segment \(id)")
                }
                incoming.segmentFiles = try SegmentFiles.validate(readWrite: writable, readOnly: readable,
                                                                  size: .exactly(segment.size),
                                                                  pages: .exactly(segment.pageSize))
            case .makeAddressSpace(let base, let size, _, _), .claimAddressSpace(_, _, let base, let size, _, _):
                guard let writable = descriptors.takeFirst(), let readable = descriptors.takeFirst() else {
                    throw BrokerError(.malformedFrame, "\(message.type) needs two descriptors")
                }
                let (end, overflow) = base.addingReportingOverflow(size)
                incoming.segmentFiles = try SegmentFiles.validate(readWrite: writable, readOnly: readable,
                                                                  size: .atLeast(overflow ? .max : end),
                                                                  pages: .exactly(UInt64(pageSize)))
            case .subscribe:
                guard let socket = descriptors.takeFirst() else {
                    throw BrokerError(.malformedFrame, "subscribe needs a socket")
                }
                guard UnixSocket.isSequencedPacketSocket(socket) else {
                    throw BrokerError(.invalidArgument, "subscribe needs a SOCK_SEQPACKET Unix socket")
                }
                incoming.eventSocket = consume socket
            default:
                break
            }
        } catch {
            logger.debug("refused \(message.type) from pid \(connection.credentials.pid): \(error)")
            send(.failure(error.code, error.message), requestID: frame.requestID, on: connection.main, of: connection)
            return
        }
        apply(core.handle(message, requestID: frame.requestID, from: connection.peer, now: now,
                          filePageSize: incoming.segmentFiles?.pageSize, file: incoming.segmentFiles?.identity),
              incoming: incoming)
    }

    /// The event channel carries only a client's answers to events (acknowledgements, backed ranges);
    /// anything else there is a broken client.
    private func handleEvent(_ frame: Frame, descriptors: OwnedDescriptorList, from connection: PeerConnection) {
        guard frame.message.isClientEvent, descriptors.isEmpty else {
            drop(connection.peer, reason: "sent \(frame.message.type) on its event channel")
            return
        }
        apply(core.event(frame.message, from: connection.peer, now: now))
    }

    /// Answers a frame with a failure on the channel it came from; on the event channel, where no
    /// reply is possible, a bad frame ends the connection.
    func refuse(_ connection: PeerConnection, on channel: Channel, requestID: UInt32, _ code: ErrorCode, _ text: String) {
        if channel.kind == .events {
            drop(connection.peer, reason: "\(code) on its event channel: \(text)")
            return
        }
        send(.failure(code, text), requestID: requestID, on: channel, of: connection)
    }
}

/// Descriptors that came with the request being handled, checked and waiting for the core to say
/// whether to keep them; whatever is not taken closes with this object.
final class IncomingDescriptors {
    var segmentFiles: SegmentFiles?
    var eventSocket: OwnedDescriptor?
}
