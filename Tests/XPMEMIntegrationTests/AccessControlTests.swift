@preconcurrency import Glibc
import Testing
import XPMEM
import XPMEMSystem

/// Mode bits decide who may get a segment, and a read-only grant cannot be turned into write access
/// by any route: checked as a real other uid (the tests run as root in CI and drop to `nobody`).
@Suite("Permissions", .serialized)
struct AccessControlTests {
    /// A probe run as the unprivileged other user against a broker every user can reach.
    func probeAsOtherUser(_ broker: TestBroker, _ arguments: [String]) throws -> ChildProcess {
        try ChildProcess("xpmem-probe", [arguments[0], "--socket", broker.socketPath, "--as-uid", "\(OtherUser.uid)",
                                         "--as-gid", "\(OtherUser.gid)"] + arguments.dropFirst())
    }

    @Test("Read-only as another uid: no writable mapping, no mprotect, no read-write reopen, no truncate",
          .enabled(if: OtherUser.available, "needs root to run a probe as another uid"))
    func readOnlyCannotBecomeWritable() throws {
        let broker = try TestBroker(mode: "0666", openDirectory: true)
        let segment = try broker.connect(name: "exporter").makeSegment(size: 16 << 10, permit: Permit(rawValue: 0o644))
        segment.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 7) }
        let probe = try probeAsOtherUser(broker, ["read-only-escape", "\(segment.id)"])
        let lines = probe.remainingLines()
        #expect(probe.waitForExit() == 0, "probe failed: \(lines) \(probe.standardError())")
        #expect(lines.contains("access-mode read-only"))
        #expect(lines.contains { $0.hasPrefix("mmap-write denied") })
        #expect(lines.contains("first-byte 7"))
        #expect(lines.contains { $0.hasPrefix("mprotect-write denied") })
        #expect(lines.contains { $0.hasPrefix("reopen-write denied") })
        #expect(lines.contains { $0.hasPrefix("truncate denied") })
        #expect(segment.withUnsafeMutableBytes { $0.allSatisfy { $0 == 7 } })
    }

    @Test("Mode bits as another uid: 0644 refuses read-write, 0600 refuses even read-only, 0666 lets it write",
          .enabled(if: OtherUser.available, "needs root to run a probe as another uid"))
    func modeBitsDecide() throws {
        let broker = try TestBroker(mode: "0666", openDirectory: true)
        let exporter = try broker.connect(name: "exporter")
        let readable = try exporter.makeSegment(size: 4096, permit: Permit(rawValue: 0o644))
        let privateSegment = try exporter.makeSegment(size: 4096, permit: Permit(rawValue: 0o600))
        let open = try exporter.makeSegment(size: 4096, permit: Permit(rawValue: 0o666))

        let readWrite = try probeAsOtherUser(broker, ["get", "\(readable.id)"])
        #expect(readWrite.remainingLines() == ["error permission denied"])
        let readOnly = try probeAsOtherUser(broker, ["get", "\(readable.id)", "--readonly"])
        #expect(readOnly.remainingLines() == ["granted first-byte 0"])
        let denied = try probeAsOtherUser(broker, ["get", "\(privateSegment.id)", "--readonly"])
        #expect(denied.remainingLines() == ["error permission denied"])
        let writer = try probeAsOtherUser(broker, ["get", "\(open.id)", "--write", "42"])
        #expect(writer.remainingLines() == ["granted first-byte 42"])
        #expect(open.withUnsafeMutableBytes { $0.allSatisfy { $0 == 42 } }, "the exporter sees the other user's writes")
    }

    @Test("A read-only attachment cannot be made writable with mprotect, even by the same uid")
    func readOnlyMappingRefusesMprotect() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 4096)
        let attachment = try broker.connect(name: "importer").get(segment.id, access: .readOnly).attach()
        let result = attachment.withUnsafeMutableBytes { mprotect($0.baseAddress, $0.count, PROT_READ | PROT_WRITE) }
        #expect(result == -1 && errno == EACCES)
    }

    @Test("An importer with read-write access still cannot resize the segment (seals)")
    func importerCannotTruncate() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 16 << 10)
        let probe = try ChildProcess("xpmem-probe", ["truncate", "--socket", broker.socketPath, "\(segment.id)"])
        let lines = probe.remainingLines()
        #expect(lines.count == 2)
        #expect(lines.allSatisfy { $0.contains("denied:") }, "\(lines)")
        // The exporter's mapping is intact: touching its last page does not fault.
        #expect(segment.withUnsafeMutableBytes { $0[(16 << 10) - 1] } == 0)
    }
}
