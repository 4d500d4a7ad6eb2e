@preconcurrency import Glibc
import Foundation
import Testing
import XPMEM
import XPMEMSystem

/// What exporters and importers see as segments come and go, and what the broker frees when a
/// process dies.
@Suite("Lifecycle", .serialized)
struct LifecycleTests {
    @Test("Two importer processes and the exporter all see each other's writes")
    func twoImportersShare() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        segment.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 1) }
        let first = try ChildProcess("share", ["import", "--socket", broker.socketPath, "\(segment.id)", "--verify", "1", "--write", "2"])
        #expect(first.waitForExit() == 0)
        let second = try ChildProcess("share", ["import", "--socket", broker.socketPath, "\(segment.id)", "--verify", "2", "--write", "3"])
        #expect(second.waitForExit() == 0)
        #expect(segment.withUnsafeMutableBytes { $0.allSatisfy { $0 == 3 } })
    }

    @Test("A sub-range attached at an offset maps exactly those bytes")
    func subRangeAtOffset() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        segment.withUnsafeMutableBytes { bytes in
            for page in 0..<16 { bytes[(page * 4096)..<((page + 1) * 4096)].initializeMemory(as: UInt8.self, repeating: UInt8(page)) }
        }
        let importer = try ChildProcess("share", ["import", "--socket", broker.socketPath, "\(segment.id)", "--verify", "5",
                                                  "--offset", "20K", "--length", "4K"])
        #expect(importer.waitForExit() == 0)
        let attachment = try broker.connect(name: "importer").get(segment.id).attach(offset: 8192, length: 8192)
        #expect(attachment.withUnsafeMutableBytes { [$0[0], $0[4096]] } == [2, 3])
    }

    @Test("Attach at a chosen address lands there; bad ranges and addresses are refused clearly")
    func attachArguments() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        let grant = try broker.connect(name: "importer").get(segment.id)
        let hole = try MemoryMapping.reserve(length: 64 << 10)
        let address = hole.base
        hole.unmap()
        let placed = try grant.attach(offset: 0, length: 16 << 10, at: address)
        #expect(placed.withUnsafeMutableBytes { $0.baseAddress } == address)
        func code(_ body: () throws -> XPMEM.Attachment) -> XPMEMError.Code? {
            do { _ = try body(); return nil } catch let error as XPMEMError { return error.code } catch { return nil }
        }
        #expect(code { try grant.attach(offset: 0, length: 4096, at: address) } == .invalidArgument, "address in use")
        #expect(code { try grant.attach(offset: 100, length: 4096) } == .invalidArgument, "unaligned offset")
        #expect(code { try grant.attach(offset: 0, length: 100) } == .invalidArgument, "unaligned length")
        #expect(code { try grant.attach(offset: 60 << 10, length: 8192) } == .invalidArgument, "past the end")
        try grant.release()
        #expect(code { try grant.attach() } == .notFound, "released handle")
        _ = placed
    }

    @Test("After remove, get and attach (even through an existing grant) fail with not found")
    func removeThenAttachFails() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 4096)
        let importer = try broker.connect(name: "importer")
        let grant = try importer.get(segment.id)
        try segment.remove()
        #expect(throws: XPMEMError.self) { try importer.get(segment.id) }
        do {
            _ = try grant.attach()
            Issue.record("attach after remove succeeded")
        } catch {
            #expect(error.code == .notFound)
        }
    }

    @Test("Exporter killed: new gets fail, the broker frees its segment and every descriptor")
    func exporterKilled() throws {
        let broker = try TestBroker()
        let baseline = broker.settledDescriptorCount()
        let exporter = try ChildProcess("share", ["export", "--socket", broker.socketPath, "--size", "64K", "--pattern", "9"])
        let id = try #require(SegmentID(exporter.readLine() ?? ""))
        let importer = try ChildProcess("share", ["import", "--socket", broker.socketPath, "\(id)", "--verify", "9"])
        #expect(importer.waitForExit() == 0)
        exporter.signal(SIGKILL)
        exporter.waitForExit()
        #expect(try broker.waitForStatus { $0.segments == 0 }.segments == 0)
        let late = try broker.connect(name: "late importer")
        do {
            _ = try late.get(id)
            Issue.record("get of a dead exporter's segment succeeded")
        } catch {
            #expect(error.code == .notFound)
        }
        late.close()
        #expect(broker.waitForDescriptorCount(baseline) == baseline)
    }

    @Test("Importer killed: its grants and attachments are freed, and its descriptors")
    func importerKilled() throws {
        let broker = try TestBroker()
        let baseline = broker.settledDescriptorCount()
        let exporter = try broker.connect(name: "exporter")
        let segment = try exporter.makeSegment(size: 64 << 10)
        let importer = try ChildProcess("xpmem-probe", ["hold", "--socket", broker.socketPath, "\(segment.id)"])
        #expect(importer.readLine() == "attached first-byte 0")
        #expect(try broker.waitForStatus { $0.attachments == 1 }.grants == 1)
        importer.signal(SIGKILL)
        importer.waitForExit()
        let status = try broker.waitForStatus { $0.grants == 0 && $0.attachments == 0 }
        #expect(status.grants == 0 && status.attachments == 0)
        try segment.remove()
        exporter.close()
        #expect(broker.waitForDescriptorCount(baseline) == baseline)
    }

    @Test("After remove, a memfd an importer kept aliases nothing live: it sees none of the exporter's later writes, the exporter none of its")
    func removeRevokesForReal() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 64 << 10)
        segment.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0x11) }
        let importer = try ChildProcess("xpmem-probe", ["keep-descriptor", "--socket", broker.socketPath, "\(segment.id)"])
        #expect(importer.readLine() == "mapped first-byte 17")
        #expect(importer.send("write 18") && importer.readLine() == "wrote")
        #expect(segment.withUnsafeMutableBytes { $0[0] } == 18, "before remove the importer shares the exporter's bytes")
        try segment.remove()
        #expect(segment.withUnsafeMutableBytes { $0[0] == 18 && $0[1...].allSatisfy { $0 == 0x11 } },
                "the exporter keeps its bytes through remove")
        segment.withUnsafeMutableBytes { $0[0] = 0x22 }
        #expect(importer.send("read") && importer.readLine() == "first-byte 18", "the kept descriptor sees a later write")
        #expect(importer.send("write 51") && importer.readLine() == "wrote")
        #expect(segment.withUnsafeMutableBytes { $0[0] } == 0x22, "a write through the kept descriptor reached the exporter")
        importer.signal(SIGKILL)
        importer.waitForExit()
    }

    @Test("exportRange keeps the address and the bytes, and importers then share them")
    func exportExistingRange() throws {
        let broker = try TestBroker()
        let exporter = try ChildProcess("xpmem-probe", ["export-range", "--socket", broker.socketPath,
                                                        "--size", "\(64 << 10)", "--pattern", "5"])
        let id = try #require(exporter.readLine())
        #expect(exporter.readLine() == "same-address true intact true")
        let importer = try ChildProcess("share", ["import", "--socket", broker.socketPath, id, "--verify", "5", "--write", "6"])
        #expect(importer.waitForExit() == 0)
        exporter.signal(SIGUSR1)
        #expect(exporter.readLine() == "first-byte 6 last-byte 6")
    }

    @Test("xpmemctl reports segments, clients and status as JSON")
    func xpmemctlJSON() throws {
        let broker = try TestBroker()
        let exporter = try broker.connect(name: "json exporter")
        let segment = try exporter.makeSegment(size: 64 << 10, permit: Permit(rawValue: 0o640), name: "visible")
        let attachment = try broker.connect(name: "json importer").get(segment.id).attach()
        let listing = try ChildProcess("xpmemctl", ["segments", "--json", "--socket", broker.socketPath])
        let segments = try JSONDecoder().decode([SegmentSummary].self, from: Data(listing.remainingLines().joined().utf8))
        #expect(segments.count == 1)
        #expect(segments.first?.id == segment.id.description)
        #expect(segments.first?.ownerPID == getpid())
        #expect(segments.first?.size == 64 << 10)
        #expect(segments.first?.mode == "0640")
        #expect(segments.first?.importers == 1 && segments.first?.attachments == 1)
        let clients = try ChildProcess("xpmemctl", ["clients", "--json", "--socket", broker.socketPath])
        let names = try JSONDecoder().decode([ClientSummary].self, from: Data(clients.remainingLines().joined().utf8)).map(\.name)
        #expect(names.contains("json exporter") && names.contains("json importer"))
        let status = try ChildProcess("xpmemctl", ["status", "--json", "--socket", broker.socketPath])
        let decoded = try JSONDecoder().decode(BrokerStatus.self, from: Data(status.remainingLines().joined().utf8))
        #expect(decoded.segments == 1 && decoded.attachments == 1 && decoded.pid == broker.pid)
        _ = attachment
    }
}
