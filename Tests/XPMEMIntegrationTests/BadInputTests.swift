@preconcurrency import Glibc
import Testing
import XPMEM
import SystemPackage
import XPMEMSystem
import XPMEMWire

/// Every frame is untrusted: each kind of bad input gets an error reply or a disconnect, never a
/// crash, never a leaked descriptor, and never a stall for the other clients.
@Suite("Bad input", .serialized)
struct BadInputTests {
    /// After each abuse: the broker runs and a well-behaved pair of clients is served.
    func expectServes(_ broker: TestBroker, _ comment: Comment) throws {
        #expect(broker.isRunning, comment)
        let exporter = try broker.connect(name: "well-behaved exporter")
        let importer = try broker.connect(name: "well-behaved importer")
        let segment = try exporter.makeSegment(size: 4096)
        segment.withUnsafeMutableBytes { $0[0] = 99 }
        let attachment = try importer.get(segment.id).attach()
        #expect(attachment.withUnsafeMutableBytes { $0[0] } == 99, comment)
        #expect(attachment.isAttached, comment)
        try attachment.detach()
        #expect(!attachment.isAttached, comment)
        try segment.remove()
        importer.close()
        exporter.close()
    }

    /// Once every client of the test has gone, the broker holds exactly the descriptors it started with.
    func expectNoLeak(_ broker: TestBroker, baseline: Int, _ comment: Comment) {
        #expect(broker.waitForDescriptorCount(baseline) == baseline, comment)
    }

    func header(type: UInt16, payloadLength: UInt32, version: UInt16 = WireProtocol.version,
                magic: UInt32 = WireProtocol.magic) -> [UInt8] {
        var writer = WireWriter()
        writer.write(magic)
        writer.write(version)
        writer.write(type)
        writer.write(UInt32(9))
        writer.write(payloadLength)
        return writer.bytes
    }

    @Test("Malformed frames get a malformed-frame error and the connection stays usable")
    func malformedFramesAreAnswered() throws {
        let broker = try TestBroker()
        let baseline = broker.settledDescriptorCount()
        let cases: [(String, [UInt8])] = [
            ("truncated header", Array(header(type: 4, payloadLength: 9).prefix(10))),
            ("oversized frame", header(type: 4, payloadLength: 5000) + [UInt8](repeating: 0, count: 5000)),
            ("unknown type", header(type: 0x1FFF, payloadLength: 0)),
            ("payload length mismatch", header(type: 4, payloadLength: 100) + [UInt8](repeating: 0, count: 9)),
            ("truncated payload", header(type: 4, payloadLength: 3) + [1, 2, 3]),
            ("invalid access mode", header(type: 4, payloadLength: 9) + [UInt8](repeating: 0, count: 8) + [7]),
            ("invalid UTF-8 name", header(type: 1, payloadLength: 4) + [2, 0, 0xFF, 0xFE]),
            ("a reply sent as a request", Frame(requestID: 1, message: .done).encoded()),
            ("an event sent as a request", Frame(requestID: 1, message: .acknowledge(SegmentID(rawValue: 1), sequence: 1)).encoded()),
        ]
        let client = try RawClient(broker.socketPath)
        try client.hello()
        for (name, bytes) in cases {
            try client.send(bytes)
            let reply = try client.receive()
            #expect(failureCode(reply?.frame.message) == .malformedFrame, "\(name): \(String(describing: reply))")
        }
        // Still the same, working connection.
        #expect(failureCode(try client.exchange(.get(SegmentID(rawValue: 1), .readOnly))) == .notFound)
        try expectServes(broker, "after malformed frames")
        client.close()
        expectNoLeak(broker, baseline: baseline, "after malformed frames")
    }

    @Test("A request before hello is refused; a second hello too")
    func helloIsRequiredOnce() throws {
        let broker = try TestBroker()
        let client = try RawClient(broker.socketPath)
        #expect(failureCode(try client.exchange(.queryStatus)) == .notConnected)
        guard case .welcome = try client.hello() else { Issue.record("no welcome"); return }
        #expect(failureCode(try client.hello()) == .invalidArgument)
    }

    @Test("Another protocol version gets a protocol-mismatch error, then the connection is closed")
    func wrongVersionIsRefusedInWords() throws {
        let broker = try TestBroker()
        let baseline = broker.settledDescriptorCount()
        let client = try RawClient(broker.socketPath)
        try client.send(.hello(clientName: "from the future"), version: WireProtocol.version + 1)
        let reply = try #require(try client.receive())
        guard case .failure(.protocolMismatch, let text) = reply.frame.message else {
            Issue.record("expected protocolMismatch, got \(reply.frame.message)")
            return
        }
        #expect(text.contains("version"))
        #expect(try client.receive() == nil, "the broker hangs up after saying why")
        try expectServes(broker, "after a version mismatch")
        client.close()
        expectNoLeak(broker, baseline: baseline, "after a version mismatch")
    }

    @Test("A frame with bad magic is not our protocol: the broker disconnects")
    func badMagicDisconnects() throws {
        let broker = try TestBroker()
        let baseline = broker.settledDescriptorCount()
        let client = try RawClient(broker.socketPath)
        try client.send(header(type: 1, payloadLength: 0, magic: 0x50545448))
        #expect(try client.receive() == nil)
        try expectServes(broker, "after bad magic")
        client.close()
        expectNoLeak(broker, baseline: baseline, "after bad magic")
    }

    @Test("Unexpected, missing or wrong descriptors are refused and closed, never kept")
    func descriptorsAreChecked() throws {
        let broker = try TestBroker()
        let baseline = broker.settledDescriptorCount()
        let client = try RawClient(broker.socketPath)
        try client.hello()
        let pipe = try FileDescriptor.pipe(options: .closeOnExec)
        defer {
            try? pipe.readEnd.close()
            try? pipe.writeEnd.close()
        }
        // A descriptor where none belongs.
        #expect(failureCode(try client.exchange(.get(SegmentID(rawValue: 1), .readOnly), descriptors: [pipe.readEnd]))
                == .malformedFrame)
        // make without its two descriptors.
        #expect(failureCode(try client.exchange(.make(size: 4096, permit: Permit(rawValue: 0o600), name: "")))
                == .malformedFrame)
        // make with pipes instead of a memfd.
        #expect(failureCode(try client.exchange(.make(size: 4096, permit: Permit(rawValue: 0o600), name: ""),
                                                descriptors: [pipe.readEnd, pipe.writeEnd])) == .invalidArgument)
        // make with a memfd whose mode would let other users reopen it read-write.
        let file = try MemoryFile.create(name: "open memfd", size: 4096)
        let readOnly = try MemoryFile.reopen(file, flags: O_RDONLY)
        let refused = try client.exchange(.make(size: 4096, permit: Permit(rawValue: 0o600), name: ""),
                                          descriptors: [file.fileDescriptor, readOnly.fileDescriptor])
        guard case .failure(.invalidArgument, let text) = refused else {
            Issue.record("a 0777 memfd was accepted: \(String(describing: refused))")
            return
        }
        #expect(text.contains("0600"))
        // make with a size that does not match the memfd.
        try MemoryFile.setMode(0o600, of: file)
        #expect(failureCode(try client.exchange(.make(size: 8192, permit: Permit(rawValue: 0o600), name: ""),
                                                descriptors: [file.fileDescriptor, readOnly.fileDescriptor])) == .invalidArgument)
        // claim is checked as make is: its two descriptors, a memfd of the declared size.
        let token = ReclaimToken(high: 5, low: 6)
        #expect(failureCode(try client.exchange(.claim(nil, token: token, size: 4096, permit: Permit(rawValue: 0o600), name: "")))
                == .malformedFrame)
        #expect(failureCode(try client.exchange(.claim(nil, token: token, size: 4096, permit: Permit(rawValue: 0o600), name: ""),
                                                descriptors: [pipe.readEnd, pipe.writeEnd])) == .invalidArgument)
        #expect(failureCode(try client.exchange(.claim(nil, token: token, size: 8192, permit: Permit(rawValue: 0o600), name: ""),
                                                descriptors: [file.fileDescriptor, readOnly.fileDescriptor])) == .invalidArgument)
        // subscribe with a pipe instead of a socket.
        #expect(failureCode(try client.exchange(.subscribe, descriptors: [pipe.readEnd])) == .invalidArgument)
        try expectServes(broker, "after bad descriptors")
        client.close()
        expectNoLeak(broker, baseline: baseline, "after bad descriptors: none of them may stay in the broker")
    }

    @Test("An access handle is valid only on the connection that obtained it")
    func handlesDoNotTravel() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 4096, permit: Permit(rawValue: 0o666))
        let owner = try RawClient(broker.socketPath)
        try owner.hello()
        guard case .granted(let handle, _, _) = try owner.exchange(.get(segment.id, .readOnly)) else {
            Issue.record("no grant")
            return
        }
        let thief = try RawClient(broker.socketPath)
        try thief.hello()
        #expect(failureCode(try thief.exchange(.attach(handle, offset: 0, length: 4096))) == .notFound)
        #expect(failureCode(try thief.exchange(.release(handle))) == .notFound)
        guard case .attached = try owner.exchange(.attach(handle, offset: 0, length: 4096)) else {
            Issue.record("the owner of the handle could not attach")
            return
        }
    }

    @Test("A client that floods requests without reading cannot stall another client, and stays connected")
    func floodingClientDoesNotStallOthers() throws {
        // A stall limit far beyond the test's length: on a busy machine the flooder must not be dropped
        // for being slow to come back and read (dropping stuck peers is tested in BrokerAbuseTests).
        let broker = try TestBroker(arguments: ["--stall-seconds", "600"])
        let baseline = broker.settledDescriptorCount()
        let flooder = try RawClient(broker.socketPath)
        try flooder.hello()
        // Fill the flooder's socket both ways: thousands of requests, no reads (without blocking the test).
        try flooder.withSocket { try $0.setNonBlocking(true) }
        var sent = 0
        let request = Frame(requestID: 2, message: .queryStatus).encoded()
        while sent < 20_000 {
            guard (try? flooder.send(request)) != nil else { break }
            sent += 1
            if sent % 500 == 0 { usleep(1000) }
        }
        #expect(sent > 100, "the flooder should have got requests in before its socket filled")

        // Another client is served while the flooder reads nothing: had the broker blocked on the
        // flooder, this exchange would time out (after a generous 20 s, never a short timing).
        let other = try RawClient(broker.socketPath)
        try other.withSocket { try UnixSocket.setReceiveTimeout($0, milliseconds: 20_000) }
        let welcome = try other.hello()
        #expect(welcome != nil && failureCode(welcome) == nil, "hello was refused: \(String(describing: welcome))")
        guard case .status = try other.exchange(.queryStatus, requestID: 5) else {
            Issue.record("another client was not served while the flooder was not reading")
            return
        }
        other.close()
        try expectServes(broker, "with a flooder still connected")

        // The flooder was only paused, not dropped: once it reads, every request it got in is answered
        // in order, and then a new one is too. A dropped flooder would see the end of the stream instead.
        try flooder.withSocket { socket in
            try socket.setNonBlocking(false)
            try UnixSocket.setReceiveTimeout(socket, milliseconds: 20_000)
        }
        var answered = 0
        while answered < sent, let reply = try flooder.receive() {
            guard reply.frame.requestID == 2, case .status = reply.frame.message else {
                Issue.record("flood request \(answered + 1) got \(reply.frame.message) for request \(reply.frame.requestID)")
                break
            }
            answered += 1
        }
        #expect(answered == sent, "the flooder's requests went unanswered: it was dropped or its requests lost")
        try flooder.send(.queryStatus, requestID: 3)
        let last = try flooder.receive()
        guard last?.frame.requestID == 3, case .status = last?.frame.message else {
            Issue.record("the flooder's connection no longer answers: \(String(describing: last?.frame))")
            return
        }
        flooder.close()
        expectNoLeak(broker, baseline: baseline, "after the flooder left")
    }

    @Test("Segment ids are 16 hex digits and differ between segments")
    func segmentIDsLookRandom() throws {
        let broker = try TestBroker()
        let exporter = try broker.connect()
        let ids = try (0..<8).map { _ in try exporter.makeSegment(size: 4096).id }
        #expect(Set(ids).count == 8)
        for id in ids { #expect(id.description.count == 16 && SegmentID(id.description) == id) }
    }
}
