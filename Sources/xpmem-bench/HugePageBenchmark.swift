import ArgumentParser
import XPMEM
import XPMEMSystem

/// What shared memory costs an exporter's own compute, and what huge pages give back: a STREAM-like
/// triad (a = b + 3c) over 256 MiB of private memory (with `MADV_HUGEPAGE`, as private memory gets
/// huge pages) against the same over an exported segment with 4 KiB pages, with shmem THP and with
/// hugetlb pages; and an importer's attach + first touch of 64 MiB with THP, and with hugetlb pages,
/// against without. Needs `shmem_enabled` to allow huge pages (`advise` or more); the hugetlb rows
/// need a pool of 160 pages of 2 MiB (`/proc/sys/vm/nr_hugepages`) and say so where there is none.
struct HugePageBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hugepages", abstract: "triad over private vs exported memory, with and without huge pages.")
    @OptionGroup var options: BenchOptions

    static let triadBytes = 256 << 20
    static let attachBytes = 64 << 20

    func run() throws {
        _ = MachineLoad.atStart
        try HugePages.transparent.checkAvailableForBenchmark()
        let environment = try BenchEnvironment(socket: options.socket)
        defer { environment.stop() }
        FigureGroup.emit([try Self.measure(environment, options)], json: options.json)
    }

    static func measure(_ environment: BenchEnvironment, _ options: BenchOptions) throws -> FigureGroup {
        let exporter = try environment.connect("hugepages bench exporter")
        let importer = try environment.connect("hugepages bench importer")
        let passes = options.iterations(5)

        // Three arrays in one region each way, 2 MiB-aligned so that huge pages can back all of them.
        let arrayBytes = triadBytes / 3 & ~((2 << 20) - 1)
        let privateRegion = try MemoryMapping.anonymous(length: 3 * arrayBytes)
        try TransparentHugePages.advise(privateRegion.base, length: 3 * arrayBytes)
        let small = try exporter.makeSegment(size: 3 * arrayBytes, name: "triad 4 KiB")
        let huge = try exporter.makeSegment(size: 3 * arrayBytes, name: "triad THP", hugePages: .transparent)
        defer {
            try? small.remove()
            try? huge.remove()
        }
        for region in [privateRegion.bytes, small.bytes, huge.bytes] { Triad(region, arrayBytes: arrayBytes).fill() }
        let hugeBacking = try huge.pageBacking()
        // The hugetlb pool, where one holds the triad's arrays and one attach's segment at once.
        let hugeTLB = (try? HugePages.hugeTLB.checkAvailable(size: 3 * arrayBytes + attachBytes)) != nil
            ? try exporter.makeSegment(size: 3 * arrayBytes, name: "triad hugetlb", hugePages: .hugeTLB) : nil
        defer { try? hugeTLB?.remove() }
        if let hugeTLB { Triad(hugeTLB.bytes, arrayBytes: arrayBytes).fill() }
        let hugeTLBBacking = try hugeTLB?.pageBacking()
        let privateHuge = (try? TransparentHugePages.pmdMappedBytes(start: UInt(bitPattern: privateRegion.base),
                                                                    length: 3 * arrayBytes)) ?? 0

        func triadBatch(_ region: UnsafeMutableRawBufferPointer) -> Double {
            let triad = Triad(region, arrayBytes: arrayBytes)
            var samples = Samples()
            for _ in 0..<passes { samples.add(triad.gigabytesPerSecond()) }
            return samples.median
        }
        let smallVersusPrivate = InterleavedRatio(budgetSeconds: 60).measure(
            ours: { triadBatch(small.bytes) }, reference: { triadBatch(privateRegion.bytes) })
        let hugeVersusPrivate = InterleavedRatio(budgetSeconds: 60).measure(
            ours: { triadBatch(huge.bytes) }, reference: { triadBatch(privateRegion.bytes) })
        let hugeTLBVersusPrivate = hugeTLB.map { segment in
            InterleavedRatio(budgetSeconds: 60).measure(
                ours: { triadBatch(segment.bytes) }, reference: { triadBatch(privateRegion.bytes) })
        }

        // Attach + first touch by an importer of a segment the exporter filled, fresh each time.
        func attachAndTouch(_ hugePages: HugePages) throws -> Double {
            var samples = Samples()
            for _ in 0..<options.iterations(3) {
                let segment = try exporter.makeSegment(size: attachBytes, name: "attach bench", hugePages: hugePages)
                segment.bytes.initializeMemory(as: UInt8.self, repeating: 1)
                let start = SharedMemoryAccess.monotonicNanoseconds()
                let grant = try importer.get(segment.id, access: .readOnly)
                let attachment = try grant.attach()
                AttachBenchmark.touchEveryPage(UnsafeRawBufferPointer(attachment.bytes))
                samples.add(Double(SharedMemoryAccess.monotonicNanoseconds() - start) / 1000)
                try attachment.detach()
                try grant.release()
                try segment.remove()
            }
            return samples.median
        }
        let attach = try InterleavedRatio(budgetSeconds: 60).measure(
            ours: { try attachAndTouch(.transparent) }, reference: { try attachAndTouch(.none) })
        let attachHugeTLB = hugeTLB == nil ? nil : try InterleavedRatio(budgetSeconds: 60).measure(
            ours: { try attachAndTouch(.hugeTLB) }, reference: { try attachAndTouch(.none) })

        let noPool = "no hugetlb pool of 160 pages: echo 160 > /proc/sys/vm/nr_hugepages"
        var rows = [
            ["triad over an exported segment, 4 KiB pages, vs private memory (GB/s)",
             Format.gigabytesPerSecond(smallVersusPrivate.ours), Format.gigabytesPerSecond(smallVersusPrivate.reference),
             smallVersusPrivate.summary],
            ["triad over an exported segment, shmem THP, vs private memory (GB/s)",
             Format.gigabytesPerSecond(hugeVersusPrivate.ours), Format.gigabytesPerSecond(hugeVersusPrivate.reference),
             hugeVersusPrivate.summary],
            ["importer attach + first touch of 64 MiB, THP vs 4 KiB (µs)", Format.micros(attach.ours),
             Format.micros(attach.reference), attach.summary],
            ["what the pages were: exported THP segment / private region", hugeBacking.description,
             "\(privateHuge >> 20) MiB huge", ""],
        ]
        if let hugeTLBVersusPrivate, let attachHugeTLB, let hugeTLBBacking {
            rows += [
                ["triad over an exported segment, hugetlb, vs private memory (GB/s)",
                 Format.gigabytesPerSecond(hugeTLBVersusPrivate.ours),
                 Format.gigabytesPerSecond(hugeTLBVersusPrivate.reference), hugeTLBVersusPrivate.summary],
                ["importer attach + first touch of 64 MiB, hugetlb vs 4 KiB (µs)", Format.micros(attachHugeTLB.ours),
                 Format.micros(attachHugeTLB.reference), attachHugeTLB.summary],
                ["what the pages were: exported hugetlb segment", hugeTLBBacking.description, "", ""],
            ]
        } else {
            rows += [["hugetlb rows skipped", noPool, "", ""]]
        }
        var spreads = ["triad_exported_4KiB_vs_private": smallVersusPrivate, "triad_exported_thp_vs_private": hugeVersusPrivate,
                       "attach_touch_64MiB_thp_vs_4KiB": attach]
        spreads["triad_exported_hugetlb_vs_private"] = hugeTLBVersusPrivate
        spreads["attach_touch_64MiB_hugetlb_vs_4KiB"] = attachHugeTLB
        return FigureGroup(
            name: "hugepages",
            note: "\(3 * arrayBytes >> 20) MiB triad (a = b + 3c), medians of \(passes) passes per batch; shmem_enabled \(TransparentHugePages.shmemPolicy?.rawValue ?? "absent")",
            columns: ["what", "ours", "reference", "ratio, pair by pair"],
            rows: rows, ratios: [:], targets: [], spreads: spreads)
    }
}

/// a = b + 3c over three equal arrays of doubles laid end to end in `region`.
private struct Triad {
    let a, b, c: UnsafeMutablePointer<Double>
    let count: Int

    init(_ region: UnsafeMutableRawBufferPointer, arrayBytes: Int) {
        count = arrayBytes / MemoryLayout<Double>.stride
        a = region.baseAddress!.bindMemory(to: Double.self, capacity: 3 * count)
        b = a + count
        c = b + count
    }

    func fill() {
        a.update(repeating: 0, count: count)
        b.update(repeating: 1, count: count)
        c.update(repeating: 2, count: count)
    }

    /// One pass; bytes moved as STREAM counts them (two reads and a write per element).
    func gigabytesPerSecond() -> Double {
        let start = SharedMemoryAccess.monotonicNanoseconds()
        for index in 0..<count { a[index] = b[index] + 3 * c[index] }
        let elapsed = SharedMemoryAccess.monotonicNanoseconds() - start
        return Double(3 * count * MemoryLayout<Double>.stride) / Double(elapsed)
    }
}

private extension HugePages {
    /// As `checkAvailable`, as a command-line error.
    func checkAvailableForBenchmark() throws {
        do {
            try checkAvailable()
        } catch {
            throw ValidationError("\(error.message) (the figure compares with and without them)")
        }
    }
}
