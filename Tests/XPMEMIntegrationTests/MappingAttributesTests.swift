@preconcurrency import Glibc
import Testing
import XPMEM
import XPMEMSystem

/// An exporter's own mapping of a segment is replaced when the segment moves to a fresh file (an
/// importer missed a deadline) and when it is removed while the process lives on. What the
/// application set on that mapping (protections, `mlock`, `madvise`) must survive both, and the
/// bytes must move even from a part the application made inaccessible.
@Suite("Mapping attributes", .serialized)
struct MappingAttributesTests {
    let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Sets a different attribute on each part of the range: no dumping, no inheriting across fork,
    /// locked, read-only, and inaccessible.
    private func setAttributes(on base: UnsafeMutableRawPointer) throws {
        let page = pageSize
        #expect(madvise(base, 4 * page, MADV_DONTDUMP) == 0)
        #expect(madvise(base + 4 * page, 4 * page, MADV_DONTFORK) == 0)
        #expect(mlock(base + 8 * page, 2 * page) == 0, "mlock: \(String(cString: strerror(errno)))")
        #expect(mprotect(base + 12 * page, 2 * page, PROT_READ) == 0)
        #expect(mprotect(base + 15 * page, page, PROT_NONE) == 0)
    }

    /// The range's attributes page by page: where mappings split or merge does not matter.
    private func attributesByPage(_ base: UnsafeMutableRawPointer, pages: Int) throws -> [String] {
        let pieces = try MappingAttributes.read(start: UInt(bitPattern: base), length: pages * pageSize).pieces
        return (0..<pages).map { index in
            let address = UInt(bitPattern: base) + UInt(index * pageSize)
            guard let piece = pieces.first(where: { $0.start <= address && address < $0.end }) else { return "unmapped" }
            return "\(piece.protection.rawValue) \(piece.flags.sorted().joined(separator: ","))"
        }
    }

    @Test("moving a segment to a fresh file keeps its mapping's protections, locks and advice, and its bytes")
    func moveKeepsAttributes() throws {
        let broker = try TestBroker()
        let segment = try broker.connect(name: "exporter").makeSegment(size: 16 * pageSize)
        let base = try #require(segment.withUnsafeMutableBytes { bytes in
            bytes.initializeMemory(as: UInt8.self, repeating: 0x11)
            bytes[15 * pageSize] = 0x15
            return bytes.baseAddress
        })
        try setAttributes(on: base)
        let before = try attributesByPage(base, pages: 16)
        #expect(Set(before).count == 6, "the attributes did not take: \(before)")

        let late = try ChildProcess("xpmem-probe", ["late-importer", "--socket", broker.socketPath, "\(segment.id)"])
        #expect(late.readLine() == "mapped first-byte 17")
        let report = try segment.invalidate(deadline: .milliseconds(300))
        #expect(report.importers.map(\.outcome) == [.missedDeadline])
        // The move is done when a later importer gets the fresh file: the revoked one no longer sees writes.
        segment.withUnsafeMutableBytes { $0[0] = 0x22 }
        #expect(late.send("read") && late.readLine() == "first-byte 17", "the segment did not move to a fresh file")
        late.signal(SIGKILL)
        late.waitForExit()

        #expect(try attributesByPage(base, pages: 16) == before)
        #expect(mprotect(base + 15 * pageSize, pageSize, PROT_READ) == 0)
        #expect(base.load(fromByteOffset: 15 * pageSize, as: UInt8.self) == 0x15,
                "the inaccessible page's bytes did not move")
    }

    @Test("removing an exported range while the process lives on keeps its mapping's attributes and bytes")
    func removeKeepsAttributes() throws {
        let broker = try TestBroker()
        let length = 16 * pageSize
        let base = try #require(mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        defer { munmap(base, length) }
        base.initializeMemory(as: UInt8.self, repeating: 0x11, count: length)
        (base + 15 * pageSize).storeBytes(of: 0x15, as: UInt8.self)
        let segment = try broker.connect(name: "exporter")
            .exportRange(UnsafeMutableRawBufferPointer(start: base, count: length))
        try setAttributes(on: base)
        let before = try attributesByPage(base, pages: 16)
        #expect(Set(before).count == 6, "the attributes did not take: \(before)")

        try segment.remove()

        #expect(try attributesByPage(base, pages: 16) == before)
        #expect(mprotect(base + 15 * pageSize, pageSize, PROT_READ) == 0)
        #expect(base.load(fromByteOffset: 15 * pageSize, as: UInt8.self) == 0x15,
                "the inaccessible page's bytes were not kept")
    }
}
