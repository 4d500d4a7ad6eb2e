@preconcurrency import Glibc
import Foundation
import SystemPackage
import Testing
import XPMEM
import XPMEMSystem
import XPMEMWire

/// What an unprivileged local user could do to the broker, done for real against a real `xpmemd`:
/// floods past the quotas, a client that stops reading, seals and flags on a descriptor the broker
/// handed over, a protocol mismatch after hello, two brokers started at once.
@Suite("Broker abuse", .serialized)
struct BrokerAbuseTests {
    /// CPU time (user + system, in clock ticks) the process has used so far. Throws rather than
    /// answering 0, which would make "the broker does not spin" hold vacuously.
    static func cpuTicks(of pid: pid_t) throws -> Int {
        let text = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        let close = try #require(text.lastIndex(of: ")"))
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
        try #require(fields.count > 13)
        return try #require(Int(fields[11])) + #require(Int(fields[12]))
    }

    static var ticksPerSecond: Int { Int(sysconf(Int32(_SC_CLK_TCK))) }

    @Test("Flooding as another uid stops at its quotas with errors naming them; root and others are still served",
          .enabled(if: OtherUser.available, "needs root to run a probe as another uid"))
    func floodStopsAtTheQuotas() throws {
        let broker = try TestBroker(mode: "0666", openDirectory: true,
                                    arguments: ["--max-connections-per-uid", "4", "--max-segments-per-uid", "3"])
        let owner = try broker.connect(name: "root exporter")
        let hidden = try owner.makeSegment(size: 4096, permit: Permit(rawValue: 0o600))
        let shown = try owner.makeSegment(size: 4096, permit: Permit(rawValue: 0o644))
        let baseline = broker.settledDescriptorCount()
        let flood = try ChildProcess("xpmem-probe", ["flood", "--socket", broker.socketPath, "--as-uid", "\(OtherUser.uid)",
                                                     "--as-gid", "\(OtherUser.gid)", "--connections", "20",
                                                     "--segments", "20"])
        #expect(flood.readLine() == "visible \(shown.id)", "a 0600 segment of root was listed to uid 65534: \(hidden.id)")
        let connected = try #require(flood.readLine())
        #expect(connected.hasPrefix("connected 4 refusal resource exhausted"), "\(connected)")
        #expect(connected.contains("--max-connections-per-uid"))
        let exported = try #require(flood.readLine())
        #expect(exported.hasPrefix("exported 3 refusal resource exhausted"), "\(exported)")
        #expect(exported.contains("--max-segments-per-uid"))
        #expect(flood.readLine() == "holding")
        // While the flood holds all it got: root connects, exports and attaches as usual.
        let importer = try broker.connect(name: "root importer")
        let segment = try owner.makeSegment(size: 4096)
        segment.withUnsafeMutableBytes { $0[0] = 5 }
        #expect(try importer.get(segment.id).attach().withUnsafeMutableBytes { $0[0] } == 5)
        try segment.remove()
        importer.close()
        flood.send("stop")
        #expect(flood.waitForExit() == 0)
        #expect(broker.waitForDescriptorCount(baseline) == baseline, "the flood's descriptors were not all freed")
    }

    @Test("A broker out of descriptors refuses new clients at once, does not spin, and serves again afterwards")
    func descriptorBudgetRefusesInsteadOfHanging() throws {
        // A hard limit of 64 descriptors leaves the broker a budget of 16: five connections.
        let directory = try FileSystem.makeTemporaryDirectory("/tmp/xpmem-budget-XXXXXX")
        defer { FileSystem.removeFlatDirectory(directory) }
        let socket = directory + "/broker.sock"
        let daemon = try ChildProcess(executable: "/bin/sh", ["-c", "ulimit -n 64 && exec \"$0\" \"$@\"",
                                                              BuiltProducts.path("xpmemd"), "--socket", socket,
                                                              "--log-level", "warning"])
        defer { daemon.signal(SIGTERM); _ = daemon.waitForExit() }
        var held: [XPMEMBroker] = []
        let deadline = Date().addingTimeInterval(10)
        while held.isEmpty && Date() < deadline {
            if let client = try? XPMEMBroker.connect(socketPath: socket, name: "first") { held.append(client) } else { usleep(10_000) }
        }
        try #require(!held.isEmpty, "the broker did not start")
        var refusals: [XPMEMError] = []
        for _ in 0..<40 {
            do {
                held.append(try XPMEMBroker.connect(socketPath: socket, name: "flood"))
            } catch {
                refusals.append(error)
            }
        }
        #expect(held.count >= 2 && held.count <= 8, "\(held.count) connections were admitted under a budget of 16")
        #expect(refusals.count == 41 - held.count, "every refused client gets an error instead of hanging")
        let ticks = try Self.cpuTicks(of: daemon.pid)
        usleep(1_000_000)
        #expect(try Self.cpuTicks(of: daemon.pid) - ticks < Self.ticksPerSecond / 2, "the broker spins while at its budget")
        for client in held { client.close() }
        held.removeAll()
        // Closing is asynchronous: retry connecting for a while; once connected, the client is served.
        var after: XPMEMBroker?
        let retryUntil = Date().addingTimeInterval(10)
        while after == nil && Date() < retryUntil {
            after = try? XPMEMBroker.connect(socketPath: socket, name: "after")
            if after == nil { usleep(20_000) }
        }
        let client = try #require(after, "the broker did not take new clients once the flood was gone")
        _ = try client.makeSegment(size: 4096)
    }

    @Test("A client that stops reading is no longer read from, costs no CPU, and is dropped after --stall-seconds")
    func stalledClientIsPausedThenDropped() throws {
        let broker = try TestBroker(arguments: ["--stall-seconds", "2"])
        let client = try RawClient(broker.socketPath)
        #expect(try client.hello() != nil)
        try client.withSocket { try $0.setNonBlocking(true) }
        let request = Frame(requestID: 2, message: .queryStatus).encoded()
        // Send until the broker stops taking requests for a whole second (its queue of unread replies
        // is full and it no longer reads this client).
        var sent = 0
        var lastProgress = Date()
        while sent < 100_000 && Date().timeIntervalSince(lastProgress) < 1 {
            do {
                try client.send(request)
                sent += 1
                lastProgress = Date()
            } catch {
                usleep(1_000)
            }
        }
        #expect(sent < 100_000, "the broker kept reading a client that never reads its replies")
        // Over three seconds (past the two-second stall limit) a spinning broker would use about three
        // seconds of CPU; a paused one, almost none.
        let ticks = try Self.cpuTicks(of: broker.pid)
        usleep(3_000_000)
        #expect(try Self.cpuTicks(of: broker.pid) - ticks < Self.ticksPerSecond / 2, "the broker busy-loops on a stalled client")
        // The broker has hung up: reading now drains the replies it had sent, then ends — with end of
        // file, or with ECONNRESET, since the broker closed with requests of ours still unread.
        try client.withSocket { try $0.setNonBlocking(false) }
        var replies = 0
        var hungUp = false
        do {
            while let _ = try client.receive() { replies += 1 }
            hungUp = true
        } catch let error as Errno where error == .connectionReset {
            hungUp = true
        }
        #expect(hungUp && replies < sent, "the stalled client was never dropped (\(replies) of \(sent) answered)")
        // Only the connection asking for the status is left.
        let status = try broker.waitForStatus { $0.clients == 1 }
        #expect(status.clients == 1)
    }

    /// A raw client and the read-write descriptor of a segment it was handed.
    struct ImporterFile: ~Copyable {
        let client: RawClient
        let file: OwnedDescriptor
    }

    /// A raw client that gets a read-write descriptor of `segment` the way the library does.
    static func rawReadWriteDescriptor(_ broker: TestBroker, _ segment: SegmentID) throws -> ImporterFile {
        let client = try RawClient(broker.socketPath)
        _ = try client.hello()
        guard case .granted(let handle, _, _) = try client.exchange(.get(segment, .readWrite)) else {
            throw XPMEMError(.permissionDenied, "get refused")
        }
        try client.send(.attach(handle, offset: 0, length: 4096))
        let received = try client.receiveMessage()
        guard let descriptor = received.descriptors.takeFirst() else { throw XPMEMError(.protocolError, "no descriptor") }
        return ImporterFile(client: client, file: descriptor)
    }

    @Test("No importer can add a seal, and one importer's file flags and locks are its own")
    func importersCannotSealOrShareFlags() throws {
        let broker = try TestBroker()
        let exporter = try broker.connect(name: "exporter")
        let segment = try exporter.makeSegment(size: 4096)
        let first = try Self.rawReadWriteDescriptor(broker, segment.id)
        let second = try Self.rawReadWriteDescriptor(broker, segment.id)
        let firstFile = first.file
        let secondFile = second.file
        #expect(throws: Errno.notPermitted) { try MemoryFile.addSeals([.futureWrite, .seal], to: firstFile) }
        #expect(throws: Errno.notPermitted) { try MemoryFile.addSeals(.write, to: firstFile) }
        #expect(try MemoryFile.seals(of: firstFile).isDisjoint(with: [.write, .futureWrite]))
        let before = try secondFile.statusFlags()
        try firstFile.setNonBlocking(true)
        #expect(try firstFile.statusFlags() & O_NONBLOCK != 0)
        #expect(try secondFile.statusFlags() == before, "one importer's F_SETFL changed another's descriptor")
        #expect(flock(firstFile.fileDescriptor.rawValue, LOCK_EX | LOCK_NB) == 0)
        // The owner and other importers still map it writable and see each other's bytes.
        let attachment = try broker.connect(name: "importer").get(segment.id).attach()
        attachment.withUnsafeMutableBytes { $0[0] = 77 }
        #expect(segment.withUnsafeMutableBytes { $0[0] } == 77)
        withExtendedLifetime((first.client, second.client)) {}
    }

    /// A memfd made the way the library makes one, for a raw `make`: read-write, then read-only.
    struct RawSegmentFiles: ~Copyable {
        let file: OwnedDescriptor
        let readOnly: OwnedDescriptor

        init(size: Int) throws {
            let file = try MemoryFile.create(name: "raw", size: size)
            try MemoryFile.setMode(0o600, of: file)
            readOnly = try MemoryFile.reopen(file, flags: O_RDONLY)
            self.file = file
        }
    }

    @Test("A version mismatch after hello frees the client, its segments and their descriptors")
    func versionMismatchAfterHelloLeaksNothing() throws {
        let broker = try TestBroker()
        let baseline = broker.settledDescriptorCount()
        for round in 0..<5 {
            let client = try RawClient(broker.socketPath)
            _ = try client.hello()
            let files = try RawSegmentFiles(size: 4096)
            let made = try client.exchange(.make(size: 4096, permit: Permit(rawValue: 0o600), name: "r\(round)"),
                                           descriptors: [files.file.fileDescriptor, files.readOnly.fileDescriptor])
            guard case .made = made else { Issue.record("make refused: \(String(describing: made))"); return }
            try client.send(.queryStatus, version: WireProtocol.version + 1)
            #expect(failureCode(try client.receive()?.frame.message) == .protocolMismatch)
            #expect(try client.receive() == nil, "the broker did not hang up")
            client.close()
        }
        let status = try broker.waitForStatus { $0.clients <= 1 && $0.segments == 0 }
        #expect(status.segments == 0, "segments of clients closed for a version mismatch are still listed")
        #expect(broker.waitForDescriptorCount(baseline) == baseline, "descriptors leaked")
    }

    @Test("Of two brokers started at once on one path exactly one runs; stopping the loser never removes the winner's socket")
    func twoBrokersAtOnce() throws {
        for _ in 0..<8 {
            let directory = try FileSystem.makeTemporaryDirectory("/tmp/xpmem-race-XXXXXX")
            defer { FileSystem.removeFlatDirectory(directory) }
            let socket = directory + "/broker.sock"
            let arguments = ["--socket", socket, "--log-level", "error"]
            let brokers = [try ChildProcess("xpmemd", arguments), try ChildProcess("xpmemd", arguments)]
            let deadline = Date().addingTimeInterval(10)
            while brokers.allSatisfy({ $0.isRunning }) && Date() < deadline { usleep(5_000) }
            usleep(200_000)
            let losers = brokers.filter { !$0.isRunning }
            #expect(losers.count == 1, "\(losers.count) of 2 brokers exited")
            for loser in losers {
                #expect(loser.waitForExit() == 2)
                #expect(loser.standardError().contains("already running"))
            }
            let client = try XPMEMBroker.connect(socketPath: socket, name: "after the race")
            #expect(try client.status().clients >= 1)
            client.close()
            for broker in brokers where broker.isRunning {
                broker.signal(SIGTERM)
                #expect(broker.waitForExit() == 0)
            }
            #expect(!FileSystem.exists(socket), "the surviving broker left its socket behind")
        }
    }
}

/// The default log level is for operators: start, stop and trouble, not every connection.
@Suite("Broker log")
struct BrokerLogTests {
    @Test("Connection churn writes no log line per connection at the default level")
    func churnIsQuietAtInfo() throws {
        let directory = try FileSystem.makeTemporaryDirectory("/tmp/xpmem-log-XXXXXX")
        defer { FileSystem.removeFlatDirectory(directory) }
        let socket = directory + "/broker.sock"
        let daemon = try ChildProcess("xpmemd", ["--socket", socket])
        var connected = 0
        let deadline = Date().addingTimeInterval(10)
        while connected < 50 && Date() < deadline {
            // Only connecting is retried (the broker may still be starting); the request must succeed.
            guard let client = try? XPMEMBroker.connect(socketPath: socket, name: "churn") else { usleep(10_000); continue }
            _ = try client.makeSegment(size: 4096)
            client.close()
            connected += 1
        }
        #expect(connected == 50)
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit() == 0)
        let lines = daemon.standardError().split(separator: "\n")
        #expect(lines.count <= 4, "\(lines.count) lines for 50 connections: \(lines.prefix(6))")
        #expect(lines.contains { $0.contains("listening") } && lines.contains { $0.contains("stopping") })
    }
}
