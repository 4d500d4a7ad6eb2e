import Logging
import SystemPackage
import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

extension BrokerServer {
    /// Sends a frame now, or queues it (owning the descriptors it carries) if the socket is full.
    /// With `handOver`, the segment's memfd, opened for this importer, travels with the frame.
    func send(
        _ message: Message, requestID: UInt32, handOver: SegmentFileHandOver? = nil, on channel: Channel,
        of connection: PeerConnection
    ) {
        var message = message
        let descriptors = OwnedDescriptorList()
        if let handOver {
            do {
                guard let files = segmentFiles[handOver.segment] else {
                    throw BrokerError(.internalError, "segment \(handOver.segment) has no memfd")
                }
                descriptors.append(try files.descriptor(for: handOver.access))
            } catch {
                if case .segmentFileReplaced = message {
                    // An event, not a reply: no failure frame would be read. The core cuts the importer
                    // off the segment instead of leaving it on the old file.
                    apply(core.fileHandOverFailed(handOver, to: connection.peer))
                    return
                }
                message = .failure(.resourceExhausted, "cannot open segment \(handOver.segment) for this importer: \(error)")
            }
        }
        let bytes = encodedFrames.bytes(of: message, requestID: requestID)
        if channel.outbound.isEmpty {
            do throws(Errno) {
                // The kernel takes its own references to what it sends; `descriptors` closes ours.
                if try UnixSocket.sendIfRoom(on: channel.socket, bytes: bytes, descriptors: descriptors) == .sent { return }
            } catch {
                drop(connection.peer, reason: "send failed: \(error)")
                return
            }
        }
        channel.outbound.append(OutboundFrame(bytes: bytes, descriptors: descriptors))
        if channel.outbound.count > Self.outboundDropThreshold {
            drop(connection.peer, reason: "not reading what the broker sends")
            return
        }
        updateInterest(channel, of: connection)
    }

    func flush(_ channel: Channel, of connection: PeerConnection) {
        while let frame = channel.outbound.first {
            do throws(Errno) {
                if try UnixSocket.sendIfRoom(on: channel.socket, bytes: frame.bytes, descriptors: frame.descriptors)
                    == .wouldBlock { break }
            } catch {
                drop(connection.peer, reason: "send failed: \(error)")
                return
            }
            // The kernel holds its own references now; the queued descriptors close with the frame.
            channel.outbound.removeFirst()
        }
        if let reason = connection.closing, connection.main.outbound.isEmpty {
            drop(connection.peer, reason: reason)
            return
        }
        updateInterest(channel, of: connection)
    }

    /// Watches for room to write while frames are queued, and for input only while the peer takes what
    /// it is sent: a peer with `outboundPauseThreshold` unread frames is not read from, and with
    /// level-triggered epoll its readable socket must then leave the set, or the loop would spin.
    func updateInterest(_ channel: Channel, of connection: PeerConnection) {
        var wanted: PollEvents = []
        if !channel.outbound.isEmpty { wanted.insert(.writable) }
        let paused = channel.outbound.count >= Self.outboundPauseThreshold
        if !paused && connection.closing == nil { wanted.insert(.readable) }
        if paused {
            if channel.stalledSince == nil { channel.stalledSince = now }
            stalled.insert(connection.peer)
        } else {
            channel.stalledSince = nil
        }
        guard wanted != channel.watched else { return }
        channel.watched = wanted
        try? poll.modify(channel.socket, events: wanted, token: connection.token(for: channel))
    }
}
