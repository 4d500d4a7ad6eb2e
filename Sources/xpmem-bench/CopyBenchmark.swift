import ArgumentParser
import XPMEM
import XPMEMSystem

/// Reading 1, 16 and 256 MiB from an attached segment with `Attachment.copyBytes` (the library's copy:
/// memcpy, or streaming stores where source and destination fill the cache), next to
/// `process_vm_readv` of the same bytes from the exporter process and a local memcpy, all into the
/// same pre-faulted destination.
struct CopyBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "copy", abstract: "attached copy vs process_vm_readv vs memcpy.")
    @OptionGroup var options: BenchOptions

    static let sizes = [1 << 20, 16 << 20, 256 << 20]

    func run() throws {
        _ = MachineLoad.atStart
        let environment = try BenchEnvironment(socket: options.socket)
        defer { environment.stop() }
        FigureGroup.emit([try Self.measure(environment, options)], json: options.json)
    }

    static func measure(_ environment: BenchEnvironment, _ options: BenchOptions) throws -> FigureGroup {
        let exporter = try environment.helper(["exporter-helper", "--socket", environment.socketPath, "--sizes"]
                                              + sizes.map(String.init))
        let exported = sizes.map { _ in exporter.readLine().split(separator: " ").map(String.init) }
        let importer = try environment.connect("bench copier")
        var rows: [[String]] = []
        var spreads: [String: RatioFigure] = [:]
        for (index, size) in sizes.enumerated() {
            let batch = options.iterations(size >= 256 << 20 ? 2 : size >= 16 << 20 ? 8 : 60)
            let grant = try importer.get(SegmentID(exported[index][0])!, access: .readOnly)
            let attachment = try grant.attach()
            let exporterPID = Int32(exported[index][1])!
            let exporterAddress = UInt(exported[index][2])!
            let destination = try MemoryMapping.anonymous(length: size)
            let source = try MemoryMapping.anonymous(length: size)
            destination.bytes.initializeMemory(as: UInt8.self, repeating: 1)
            source.bytes.initializeMemory(as: UInt8.self, repeating: 0x5A)
            // Fault the attachment in once: the figure is about copying, not about first touch.
            AttachBenchmark.touchEveryPage(UnsafeRawBufferPointer(attachment.bytes))

            var readFailure: String?
            var copyFailure: String?
            func attachedBatch() -> Samples {
                bandwidth(size, batch) {
                    do { try attachment.copyBytes(into: destination.bytes) } catch { copyFailure = "copyBytes: \(error)" }
                }
            }
            func crossMemoryBatch() -> Samples {
                bandwidth(size, batch) {
                    do {
                        _ = try ProcessHandle.readMemory(of: exporterPID, at: exporterAddress, into: destination.bytes)
                    } catch {
                        readFailure = "process_vm_readv: \(error)"
                    }
                }
            }
            func localBatch() -> Samples { bandwidth(size, batch) { destination.base.copyMemory(from: source.base, byteCount: size) } }
            // Ours against each reference, interleaved pair by pair; bandwidths, so ours / reference.
            var attached = Samples(), crossMemory = Samples(), local = Samples()
            let versusReadv = InterleavedRatio().measure(
                ours: { let samples = attachedBatch(); attached.add(contentsOf: samples); return samples.median },
                reference: { let samples = crossMemoryBatch(); crossMemory.add(contentsOf: samples); return samples.median })
            if let failure = readFailure { throw XPMEMError(.systemCallFailed, failure) }
            let versusMemcpy = InterleavedRatio().measure(
                ours: { let samples = attachedBatch(); attached.add(contentsOf: samples); return samples.median },
                reference: { let samples = localBatch(); local.add(contentsOf: samples); return samples.median })
            if let copyFailure { throw XPMEMError(.systemCallFailed, copyFailure) }
            // The exporter's bytes are 0x5A too: clear the destination so that only copyBytes can put them there.
            destination.bytes.initializeMemory(as: UInt8.self, repeating: 1)
            try attachment.copyBytes(into: destination.bytes)
            guard destination.bytes.allSatisfy({ $0 == 0x5A }) else {
                throw XPMEMError(.brokerInternal, "the copied bytes are wrong")
            }
            let label = "\(size >> 20)MiB"
            spreads["copy_vs_process_vm_readv_\(label)"] = versusReadv
            spreads["copy_vs_memcpy_\(label)"] = versusMemcpy
            rows.append([label, Format.gigabytesPerSecond(attached.median), Format.gigabytesPerSecond(crossMemory.median),
                         Format.gigabytesPerSecond(local.median), versusReadv.summary, versusMemcpy.summary])
            try attachment.detach()
            try grant.release()
        }
        exporter.stop()
        return FigureGroup(
            name: "copy",
            note: "median GB/s into the same pre-faulted buffer, ours and each reference interleaved; exporter is another process",
            columns: ["size", "attached copyBytes", "process_vm_readv", "local memcpy", "vs readv", "vs memcpy"],
            rows: rows, ratios: [:],
            targets: ["copy_vs_process_vm_readv_16MiB >= 3", "copy_vs_memcpy_1MiB >= 0.95", "copy_vs_memcpy_16MiB >= 0.95",
                      "copy_vs_memcpy_256MiB >= 0.95"], spreads: spreads)
    }

    /// GB/s of `iterations` runs of `copy` moving `size` bytes, after two warm-up runs.
    static func bandwidth(_ size: Int, _ iterations: Int, _ copy: () -> Void) -> Samples {
        var samples = Samples()
        for iteration in 0..<(iterations + 2) {
            let start = SharedMemoryAccess.monotonicNanoseconds()
            copy()
            let elapsed = SharedMemoryAccess.monotonicNanoseconds() - start
            if iteration >= 2 { samples.add(Double(size) / Double(elapsed)) }
        }
        return samples
    }
}
