@preconcurrency import Glibc
import Logging
import SystemPackage
import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

extension BrokerServer {
    /// Reads up to `framesPerWakeUp` frames from one of a client's sockets and handles each.
    func readFrames(from channel: Channel, of connection: ClientConnection) {
        for _ in 0..<Self.framesPerWakeUp {
            guard connections[connection.number] != nil, connection.state != .closing,
                  channel.outbound.count < Self.outboundPauseThreshold
            else { return }
            let received: ReceivedMessage
            do {
                received = try UnixSocket.receive(
                    channel.socket.rawValue, into: receiveBuffer, maximumDescriptors: 4, flags: CInt(MSG_DONTWAIT))
            } catch {
                switch error {
                case .wouldBlock: return
                case .messageTooLong:
                    refuse(connection, on: channel, requestID: 0, .malformedFrame, "too many descriptors in one frame")
                    continue
                default:
                    drop(connection.number, reason: "receive failed: \(error)")
                    return
                }
            }
            if received.isEndOfFile {
                drop(connection.number, reason: channel.kind == .main ? "connection closed" : "event channel closed")
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
        }
    }

    /// Decodes one untrusted frame, answering every problem; nil when there is nothing to dispatch.
    private func checkedFrame(
        _ bytes: UnsafeRawBufferPointer, truncated: Bool, on channel: Channel, of connection: ClientConnection
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
                drop(connection.number, reason: "not speaking the xpmem protocol")
            } else {
                refuse(connection, on: channel, requestID: 0, .malformedFrame, "bad frame header: \(error)")
            }
            return nil
        }
        guard header.version == WireProtocol.version else {
            refuse(connection, on: channel, requestID: header.requestID, .protocolMismatch,
                "this broker speaks protocol version \(WireProtocol.version) and the client version \(header.version): use a client library and xpmemd from the same release")
            connection.state = .closing
            if channel.outbound.isEmpty { drop(connection.number, reason: "protocol version \(header.version)") }
            return nil
        }
        do {
            return try Frame.decode(bytes)
        } catch {
            refuse(connection, on: channel, requestID: header.requestID, .malformedFrame, "cannot decode: \(error)")
            return nil
        }
    }

    private func handleRequest(_ frame: Frame, descriptors: OwnedDescriptorList, from connection: ClientConnection) {
        guard frame.message.isRequest else {
            refuse(connection, on: connection.main, requestID: frame.requestID, .malformedFrame,
                   "\(frame.message.type) is not a request")
            return
        }
        guard descriptors.count == frame.message.descriptorCount else {
            refuse(connection, on: connection.main, requestID: frame.requestID, .malformedFrame,
                   "\(frame.message.type) carries \(frame.message.descriptorCount) descriptors, this frame \(descriptors.count)")
            return
        }
        if let outcome = respond(to: frame, descriptors: descriptors, from: connection) {
            send(outcome.message, requestID: frame.requestID, descriptors: outcome.descriptors, on: connection.main,
                 of: connection)
        }
    }

    /// The event channel carries only acknowledgements; anything else there is a broken client.
    private func handleEvent(_ frame: Frame, descriptors: OwnedDescriptorList, from connection: ClientConnection) {
        guard case .acknowledge(let segment, let sequence) = frame.message, descriptors.isEmpty,
              let client = connection.clientID
        else {
            drop(connection.number, reason: "sent \(frame.message.type) on its event channel")
            return
        }
        apply(coordinator.acknowledge(segment, sequence: sequence, from: client, now: now))
    }

    /// Answers a frame with a failure on the channel it came from.
    func refuse(_ connection: ClientConnection, on channel: Channel, requestID: UInt32, _ code: ErrorCode, _ text: String) {
        if channel.kind == .events {
            drop(connection.number, reason: "\(code) on its event channel: \(text)")
            return
        }
        send(.failure(code, text), requestID: requestID, on: channel, of: connection)
    }
}
