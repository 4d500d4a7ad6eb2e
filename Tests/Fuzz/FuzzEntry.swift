import Foundation

/// libFuzzer's entry point: one input, one run. The first byte chooses what the rest drives:
/// - 0: a whole frame, header included, straight into the decoder;
/// - 1: a payload of a chosen message type behind a well-formed header, with fake descriptors;
/// - 2: a sequence of peer operations driving a `BrokerCore` (`BrokerCoreScenario`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    var input = FuzzBytes(bytes)
    switch input.byte() % 3 {
    case 0: WireDecodingProperty.checkWholeFrame(input.rest())
    case 1: WireDecodingProperty.checkTypedPayload(&input)
    default: BrokerCoreScenario.run(&input)
    }
    return 0
}

/// With XPMEM_FUZZ_WRITE_SEEDS=DIR, writes the seed corpus (made by the encoder) into DIR and exits
/// instead of fuzzing; `make fuzz-seeds` uses it to regenerate Tests/Fuzz/corpus.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    // getenv, not ProcessInfo: ProcessInfo caches the whole environment, which LeakSanitizer reports.
    guard let directory = getenv("XPMEM_FUZZ_WRITE_SEEDS") else { return 0 }
    do {
        try SeedCorpus.write(into: URL(fileURLWithPath: String(cString: directory)))
    } catch {
        FileHandle.standardError.write(Data("cannot write the seeds: \(error)\n".utf8))
        exit(1)
    }
    exit(0)
}
