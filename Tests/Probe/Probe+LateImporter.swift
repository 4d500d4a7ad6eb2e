import ArgumentParser
import XPMEMSystem
import XPMEMWire

extension Probe {
    /// An importer that opens an event channel and never reads it, so that it misses every
    /// invalidation deadline, and keeps the memfd it was given whatever the broker says: it shows what
    /// a revoked importer still reaches (`serveFirstByte`).
    struct LateImporter: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "late-importer")
        @OptionGroup var options: ProbeOptions
        @Argument var segment: String

        func run() throws {
            try options.becomeRequestedUser()
            guard let id = SegmentID(segment) else { throw ValidationError("not a segment id: \(segment)") }
            // Both sockets stay open for the life of the probe, so the broker keeps the grant and
            // counts this importer as subscribed.
            let connection = try UnixSocket.connect(to: options.socket)
            let events = try UnixSocket.pair()
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WireProtocol.maximumReplySize, alignment: 16)
            defer { buffer.deallocate() }
            func receiveReply() throws -> (Message, OwnedDescriptorList) {
                let received = try UnixSocket.receive(connection, into: buffer, maximumDescriptors: 4)
                let frame = try Frame.decode(UnsafeRawBufferPointer(rebasing: buffer[..<received.byteCount]))
                return (frame.message, received.descriptors)
            }
            func exchange(_ message: Message) throws -> (Message, OwnedDescriptorList) {
                try UnixSocket.send(connection, bytes: Frame(requestID: 1, message: message).encoded())
                return try receiveReply()
            }
            _ = try exchange(.hello(clientName: "late importer"))
            try UnixSocket.send(connection, bytes: Frame(requestID: 1, message: .subscribe).encoded(),
                                passing: [events.second.fileDescriptor])
            guard case (.done, _) = try receiveReply() else { throw ValidationError("subscribe refused") }
            guard case (.granted(let handle, let size, _), _) = try exchange(.get(id, .readWrite)) else {
                throw ValidationError("get refused")
            }
            let (attached, descriptors) = try exchange(.attach(handle, offset: 0, length: size))
            guard case .attached = attached, let file = descriptors.takeFirst() else {
                throw ValidationError("attach: \(attached)")
            }
            let mapping = try MemoryMapping.mapShared(file, length: Int(size), protection: .readWrite)
            report("mapped first-byte \(mapping.bytes[0])")
            try serveFirstByte(of: mapping.bytes)
            withExtendedLifetime(events) {}
        }
    }
}
