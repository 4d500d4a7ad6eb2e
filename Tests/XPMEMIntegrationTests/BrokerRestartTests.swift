@preconcurrency import Glibc
import Foundation
import Testing
import XPMEM
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
            for child in [exporter, writer, reader] where child.process.process.isRunning { child.process.send("quit") }
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
