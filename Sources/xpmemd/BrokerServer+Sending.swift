@preconcurrency import Glibc
import SystemPackage
import Logging
import XPMEMBrokerCore
import XPMEMSystem
import XPMEMWire

extension BrokerServer {
    /// Sends a frame now, or queues it (with duplicates of its descriptors) if the socket is full.
    func send(
        _ message: Message, requestID: UInt32, descriptors: [CInt] = [], on channel: Channel, of connection: ClientConnection
    ) {
        let bytes = Frame(requestID: requestID, message: message).encoded()
        if channel.outbound.isEmpty {
            do throws(Errno) {
                try UnixSocket.send(channel.socket.rawValue, bytes: bytes, descriptors: descriptors)
                return
            } catch {
                guard error == .wouldBlock else {
                    drop(connection.number, reason: "send failed: \(error)")
                    return
                }
            }
        }
        var copies: [CInt] = []
        for descriptor in descriptors {
            guard let copy = try? OwnedDescriptor.duplicating(descriptor).relinquish() else {
                drop(connection.number, reason: "cannot queue a descriptor")
                return
            }
            copies.append(copy)
        }
        channel.outbound.append(OutboundFrame(bytes: bytes, descriptors: OwnedDescriptorList(adopting: copies)))
        if channel.outbound.count > Self.outboundDropThreshold {
            drop(connection.number, reason: "not reading what the broker sends")
            return
        }
        updateInterest(channel, of: connection)
    }

    /// Sends an event on a client's event channel, if it has one.
    func notify(_ client: ClientID, _ message: Message) {
        guard let number = connectionOfClient[client], let connection = connections[number],
              let events = connection.events
        else { return }
        send(message, requestID: 0, on: events, of: connection)
    }

    /// Sends a reply on a client's main connection, if it is still there.
    func reply(_ client: ClientID, requestID: UInt32, _ message: Message, descriptors: [CInt] = []) {
        guard let number = connectionOfClient[client], let connection = connections[number] else { return }
        send(message, requestID: requestID, descriptors: descriptors, on: connection.main, of: connection)
    }

    func flush(_ channel: Channel, of connection: ClientConnection) {
        while let frame = channel.outbound.first {
            do throws(Errno) {
                try UnixSocket.send(channel.socket.rawValue, bytes: frame.bytes, descriptors: frame.descriptors.rawValues)
            } catch {
                if error == .wouldBlock { break }
                drop(connection.number, reason: "send failed: \(error)")
                return
            }
            // The kernel holds its own references now; the queued duplicates close with the frame.
            channel.outbound.removeFirst()
        }
        if connection.state == .closing && channel.outbound.isEmpty {
            drop(connection.number, reason: "closed after a fatal protocol error")
            return
        }
        updateInterest(channel, of: connection)
    }

    private func updateInterest(_ channel: Channel, of connection: ClientConnection) {
        let wantsWritable = !channel.outbound.isEmpty
        guard wantsWritable != channel.wantsWritable else { return }
        channel.wantsWritable = wantsWritable
        let events: PollEvents = wantsWritable ? [.readable, .writable] : .readable
        try? poll.modify(channel.socket.rawValue, events: events, token: connection.token(for: channel))
    }
}
