@preconcurrency import Glibc
import Foundation
import Testing
import XPMEM
import SystemPackage
import Synchronization
import XPMEMSystem

/// A child process whose output lines are kept, so that a test can wait for one among others that
/// arrive in any order (connection events, invalidation events, answers to commands).
final class ChildLines {
    let process: ChildProcess
    private(set) var lines: [String] = []
    private var consumed = 0

    init(_ process: ChildProcess) { self.process = process }

    /// The first line not yet returned that starts with `prefix`, waiting up to `timeout` seconds.
    func waitFor(_ prefix: String, timeout: Double = 60) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let index = lines.indices.dropFirst(consumed).first(where: { lines[$0].hasPrefix(prefix) }) {
                // Lines before it stay available to later waits for other prefixes.
                let line = lines.remove(at: index)
                return line
            }
            guard let line = process.readLine(timeout: max(0, deadline.timeIntervalSinceNow)) else { return nil }
            lines.append(line)
        }
    }

    /// Sends a command and waits for its answer.
    func ask(_ command: String, answer prefix: String, timeout: Double = 60) -> String? {
        guard process.send(command) else { return nil }
        return waitFor(prefix, timeout: timeout)
    }
}

@Suite("Broker restart (kill -9, a new broker on the same socket)", .serialized)
struct BrokerRestartTests {
    @Test("Nothing is lost: mappings keep working, segments come back with the same ids, grants and invalidations resume, nobody else can take an id")
    func restartLosesNothing() throws {
        let broker = try TestBroker(mode: "0666", openDirectory: true)
        let exporter = ChildLines(try ChildProcess("xpmem-probe", ["restart-exporter", "--socket", broker.socketPath,
                                                                   "--size", "65536", "--pattern", "5"]))
        let idLine = try #require(exporter.waitFor("segment "))
        let id = try #require(SegmentID(String(idLine.dropFirst(8))))
        let writer = ChildLines(try ChildProcess("xpmem-probe", ["restart-importer", "--socket", broker.socketPath, "\(id)"]))
        let reader = ChildLines(try ChildProcess("xpmem-probe", ["restart-importer", "--socket", broker.socketPath, "\(id)",
                                                                 "--readonly"]))
        #expect(writer.waitFor("attached ")?.hasPrefix("attached") == true)
        #expect(reader.waitFor("attached ")?.hasPrefix("attached") == true)
        #expect(reader.ask("read", answer: "bytes ") == "bytes uniform 5")
        defer {
            for child in [exporter, writer, reader] where child.process.isRunning { child.process.send("quit") }
            for child in [exporter, writer, reader] { child.process.waitForExit(timeout: 20) }
        }

        // The exporter is stopped so that the new broker starts before it can come back: the window
        // in which a squatter would try to take its segment's id.
        exporter.process.signal(SIGSTOP)
        broker.kill9()
        #expect(writer.waitFor("lost") == "lost")
        #expect(reader.waitFor("lost") == "lost")
        // No broker at all: the mappings are the importers' own and keep working.
        #expect(writer.ask("write 6", answer: "wrote ") == "wrote 6")
        #expect(reader.ask("read", answer: "bytes ") == "bytes uniform 6")

        try broker.startAgain()
        // Before the owner is back, nobody can register its segment's id: not another uid, not root.
        if OtherUser.available {
            let squatter = try ChildProcess("xpmem-probe", ["squat", "--socket", broker.socketPath,
                                                            "--as-uid", "\(OtherUser.uid)", "--as-gid", "\(OtherUser.gid)",
                                                            "\(id)"])
            let answer = squatter.readLine(timeout: 30) ?? "nothing"
            #expect(answer.hasPrefix("claim refused permission denied"), "uid \(OtherUser.uid): \(answer)")
            squatter.waitForExit()
        }
        let rootSquatter = try ChildProcess("xpmem-probe", ["squat", "--socket", broker.socketPath, "\(id)"])
        let rootAnswer = rootSquatter.readLine(timeout: 30) ?? "nothing"
        #expect(rootAnswer.hasPrefix("claim refused permission denied"), "a token of its own: \(rootAnswer)")
        rootSquatter.waitForExit()
        let early = try broker.connect(name: "early importer")
        #expect(throws: XPMEMError.self, "the segment is not back before its exporter") { try early.get(id) }
        early.close()
        #expect(writer.ask("write 7", answer: "wrote ") == "wrote 7")

        exporter.process.signal(SIGCONT)
        let reconnected = try #require(exporter.waitFor("reconnected "), "exporter: \(exporter.lines)")
        #expect(reconnected.hasPrefix("reconnected segments=\(id) "), "\(reconnected)")
        #expect(writer.waitFor("restored \(id)") != nil, "writer: \(writer.lines)")
        #expect(reader.waitFor("restored \(id)") != nil, "reader: \(reader.lines)")
        #expect(exporter.ask("read", answer: "bytes ") == "bytes uniform 7", "the exporter sees what was written meanwhile")
        #expect(reader.ask("read", answer: "bytes ") == "bytes uniform 7")

        // The segment is listed again under its id, with its exporter's pid.
        let listing = try ChildProcess("xpmemctl", ["segments", "--socket", broker.socketPath])
        let listed = listing.remainingLines()
        #expect(listed.contains { $0.contains("\(id)") && $0.contains("\(exporter.process.pid)") }, "\(listed)")

        // Invalidations reach both importers again, and they acknowledge.
        let invalidated = try #require(exporter.ask("invalidate", answer: "invalidate"))
        #expect(invalidated.hasPrefix("invalidated ") && invalidated.hasSuffix(" acked,acked"), "\(invalidated)")
        for importer in [writer, reader] {
            #expect(importer.waitFor("begin ")?.hasSuffix(" 0 65536") == true, "\(importer.lines)")
            #expect(importer.waitFor("end ") != nil, "\(importer.lines)")
        }
        let operatorRun = try ChildProcess("xpmemctl", ["invalidate", "\(id)", "--socket", broker.socketPath])
        #expect(operatorRun.waitForExit() == 0, "xpmemctl invalidate: \(operatorRun.remainingLines())")
        #expect(writer.waitFor("end ") != nil && reader.waitFor("end ") != nil)

        // A third process gets and attaches the segment by its old id, both ways.
        let third = try broker.connect(name: "third")
        #expect(try third.get(id, access: .readOnly).attach().withUnsafeMutableBytes { $0[100] } == 7)
        let writable = try third.get(id).attach()
        writable.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 8) }
        #expect(exporter.ask("read", answer: "bytes ") == "bytes uniform 8")
        #expect(reader.ask("read", answer: "bytes ") == "bytes uniform 8")
        #expect(!writer.lines.contains { $0.hasPrefix("abandoned") || $0.hasPrefix("release") }, "\(writer.lines)")
    }
}

/// Connection events of an in-process client, kept for the test to wait on.
final class ConnectionEvents: Sendable {
    private let seen = Mutex<[BrokerConnectionEvent]>([])

    init(of broker: XPMEMBroker) {
        broker.setConnectionEventHandler { [self] event in seen.withLock { $0.append(event) } }
    }

    var all: [BrokerConnectionEvent] { seen.withLock { $0 } }

    /// Waits up to `timeout` seconds for an event `matching`.
    func waitFor(timeout: Double = 60, _ matching: (BrokerConnectionEvent) -> Bool) -> BrokerConnectionEvent? {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if let event = all.first(where: matching) { return event }
            usleep(10_000)
        } while Date() < deadline
        return nil
    }

    func reconnected(timeout: Double = 60) -> Restoration? {
        guard case .reconnected(let restoration)? = waitFor(timeout: timeout, {
            if case .reconnected = $0 { return true }
            return false
        }) else { return nil }
        return restoration
    }
}

extension BrokerRestartTests {
    @Test("While the broker is gone calls fail at once, saying why; the connection then comes back by itself and says what it restored")
    func callsFailFastThenTheConnectionComesBack() throws {
        let broker = try TestBroker()
        let client = try broker.connect(name: "survivor")
        let events = ConnectionEvents(of: client)
        let kept = try client.makeSegment(size: 8192, permit: Permit(rawValue: 0o644), name: "kept")
        let dropped = try client.makeSegment(size: 4096, name: "removed while down")
        let firstPID = client.brokerPID
        broker.kill9()
        #expect(events.waitFor {
            if case .lost = $0 { return true }
            return false
        } != nil, "\(events.all)")
        #expect(!client.isConnected)
        let began = Date()
        for _ in 0..<3 {
            do {
                _ = try client.status()
                Issue.record("a request succeeded with no broker")
            } catch {
                #expect(error.code == .brokerUnavailable)
                #expect(error.message.contains("reconnecting"), "\(error.message)")
            }
        }
        #expect(throws: XPMEMError.self) { try client.get(kept.id) }
        #expect(throws: XPMEMError.self) { try kept.invalidate() }
        #expect(Date().timeIntervalSince(began) < 10, "requests without a broker must not wait for one")
        // Removed while nobody can be told: gone here, and not registered again.
        try dropped.remove()

        try broker.startAgain()
        let restoration = try #require(events.reconnected(), "\(events.all)")
        #expect(restoration.segments == [kept.id])
        #expect(restoration.brokerPID == broker.pid && restoration.brokerPID != firstPID)
        #expect(client.isConnected)
        #expect(try client.status().pid == broker.pid)
        #expect(try client.segments().map(\.id) == ["\(kept.id)"])
        #expect(try broker.connect(name: "importer").get(kept.id, access: .readOnly).size == 8192)
    }

    @Test("With reconnection disabled, the connection stays down after the broker restarts (the behaviour before reconnection)")
    func disabledReconnectionStaysDown() throws {
        let broker = try TestBroker()
        let client = try XPMEMBroker.connect(socketPath: broker.socketPath, name: "no reconnect", reconnect: .disabled)
        let events = ConnectionEvents(of: client)
        let segment = try client.makeSegment(size: 4096)
        broker.kill9()
        try broker.startAgain()
        usleep(300_000)
        #expect(throws: XPMEMError.self) { try client.status() }
        #expect(throws: XPMEMError.self) { try client.status() }
        #expect(try broker.connect(name: "lister").segments().isEmpty, "segment \(segment.id) came back")
        #expect(events.all.isEmpty)
    }

    @Test("Under socket activation (systemd's part played by xpmem-probe supervise), a killed broker's clients come back to its successor")
    func socketActivatedRestart() throws {
        let directory = try FileSystem.makeTemporaryDirectory("/tmp/xpmem-restart-XXXXXX")
        defer { FileSystem.removeFlatDirectory(directory) }
        let socket = directory + "/broker.sock"
        let manager = try ChildProcess("xpmem-probe", ["supervise", "--socket", socket, "--",
                                                       BuiltProducts.path("xpmemd"), "--log-level", "warning"])
        defer {
            if manager.isRunning { manager.send("stop") }
            _ = manager.waitForExit()
        }
        let first = try #require(manager.readLine().flatMap { $0.hasPrefix("started ") ? Int32($0.dropFirst(8)) : nil })
        let exporter = try XPMEMBroker.connect(socketPath: socket, name: "exporter")
        let events = ConnectionEvents(of: exporter)
        let segment = try exporter.makeSegment(size: 65536, permit: Permit(rawValue: 0o600))
        segment.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 3) }
        let importer = ChildLines(try ChildProcess("xpmem-probe", ["restart-importer", "--socket", socket, "\(segment.id)"]))
        defer {
            importer.process.send("quit")
            importer.process.waitForExit(timeout: 20)
        }
        #expect(importer.waitFor("attached ") != nil)
        kill(first, SIGKILL)
        #expect(manager.readLine() == "exited 9")
        let second = try #require(manager.readLine().flatMap { $0.hasPrefix("started ") ? Int32($0.dropFirst(8)) : nil })
        let restoration = try #require(events.reconnected(), "\(events.all)")
        #expect(restoration.segments == [segment.id] && restoration.brokerPID == second)
        #expect(importer.waitFor("restored \(segment.id)") != nil, "\(importer.lines)")
        #expect(importer.ask("write 4", answer: "wrote ") == "wrote 4")
        #expect(segment.withUnsafeMutableBytes { $0[65535] } == 4)
        let report = try segment.invalidate(deadline: .seconds(30))
        #expect(report.importers.map(\.outcome) == [.acknowledged])
        #expect(importer.waitFor("end \(report.sequence)") != nil, "\(importer.lines)")
        #expect(manager.send("stop"))
        #expect(manager.readLine() == "stopped")
    }
}

extension BrokerRestartTests {
    @Test("Killed inside an invalidation window: the importer ends the window itself (brokerLost), comes back, and the next invalidation reaches it")
    func restartInsideAWindow() throws {
        let broker = try TestBroker()
        let client = try broker.connect(name: "exporter")
        let events = ConnectionEvents(of: client)
        let segment = try client.makeSegment(size: 65536)
        fill(segment, with: 1)
        let importer = ChildLines(try ChildProcess("xpmem-probe", ["restart-importer", "--socket", broker.socketPath,
                                                                   "\(segment.id)"]))
        defer {
            importer.process.send("quit")
            importer.process.waitForExit(timeout: 20)
        }
        #expect(importer.waitFor("attached ") != nil)
        let open = try segment.beginInvalidation(deadline: .seconds(30))
        #expect(open.importers.map(\.outcome) == [.acknowledged])
        #expect(importer.waitFor("begin \(open.sequence) ") != nil)
        fill(segment, with: 2)
        broker.kill9()
        #expect(importer.waitFor("broker-lost") == "broker-lost [\(open.sequence)]", "\(importer.lines)")
        #expect(throws: XPMEMError.self, "no broker holds the window any more") { try segment.endInvalidation(open) }
        #expect(importer.ask("read", answer: "bytes ") == "bytes uniform 2", "the window ended with the pages mapped back")

        try broker.startAgain()
        #expect(events.reconnected()?.segments == [segment.id], "\(events.all)")
        #expect(importer.waitFor("restored \(segment.id)") != nil, "\(importer.lines)")
        let next = try segment.invalidate(deadline: .seconds(30)) { fill(segment, with: 3) }
        #expect(next.importers.map(\.outcome) == [.acknowledged])
        #expect(importer.waitFor("begin \(next.sequence) ") != nil && importer.waitFor("end \(next.sequence)") != nil,
                "\(importer.lines)")
        #expect(importer.ask("read", answer: "bytes ") == "bytes uniform 3")
    }
}

extension BrokerRestartTests {
    @Test("An id that comes back backed by another file is not re-attached: the importer abandons it and keeps mapping the pages it had")
    func anotherFileUnderTheSameIdIsNotAttached() throws {
        let broker = try TestBroker()
        // The owner speaks the protocol by hand, to do what the library never does: claim its id
        // again with another memfd.
        let token = ReclaimToken(high: try ProcessHandle.randomUInt64(), low: try ProcessHandle.randomUInt64())
        // The files need not stay open here: the broker and the importer's mapping hold them.
        func claim(_ id: SegmentID?, on client: RawClient, name: String) throws -> Message? {
            let file = try MemoryFile.create(name: name, size: 65536)
            try MemoryFile.setMode(0o600, of: file)
            let readOnly = try MemoryFile.reopen(file, flags: O_RDONLY)
            return try client.exchange(.claim(id, token: token, size: 65536, permit: Permit(rawValue: 0o600), name: name),
                                       descriptors: [file.fileDescriptor, readOnly.fileDescriptor])
        }
        let owner = try RawClient(broker.socketPath)
        try owner.hello()
        let made = try claim(nil, on: owner, name: "first")
        guard case .made(let id)? = made else {
            Issue.record("the first claim was answered \(String(describing: made))")
            return
        }
        let importer = try broker.connect(name: "importer")
        let events = ConnectionEvents(of: importer)
        let attachment = try importer.get(id).attach()
        attachment.withUnsafeMutableBytes { $0[0] = 9 }

        broker.kill9()
        try broker.startAgain()
        let impostor = try RawClient(broker.socketPath)
        try impostor.hello()
        let again = try claim(id, on: impostor, name: "second")
        #expect(again == .made(id), "the same uid with the token may register the id again")
        let abandoned = events.waitFor {
            if case .abandoned(id, let reason) = $0 { return reason.contains("another file") }
            return false
        }
        #expect(abandoned != nil, "\(events.all)")
        #expect(attachment.withUnsafeMutableBytes { $0[0] } == 9, "the mapping still shows the first file")
    }
}
