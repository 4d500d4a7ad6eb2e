import XPMEM

extension Communicator {
    /// Sums `count` doubles element-wise across all ranks: afterwards every rank's `output` holds
    /// the sum of every rank's `input` (summed in rank order, so every rank gets the same bits).
    ///
    /// Single-copy reduce-scatter then allgather, with no message carrying data: each rank
    /// publishes its two buffers' segment ids; rank r sums slice r of every rank's input, reading
    /// peers' inputs in place through cached attachments, into its own output; then every rank
    /// copies the other slices straight from their owners' outputs. Three barriers order the
    /// phases: published → slices reduced → everyone done reading (so buffers may change after
    /// the call returns).
    public func allreduceSum(_ input: SharedBuffer, into output: SharedBuffer, count: Int) throws {
        let bytes = count * MemoryLayout<Double>.stride
        guard bytes <= input.bytes.count, bytes <= output.bytes.count else {
            throw CommunicatorError.truncated(source: rank, length: bytes, capacity: min(input.bytes.count, output.bytes.count))
        }
        guard size > 1 else {
            output.bytes.baseAddress!.copyMemory(from: input.bytes.baseAddress!, byteCount: bytes)
            return
        }
        // One operation: the peers' pointers below stay mapped until it returns (the internal
        // barriers are not operation boundaries, unlike the public `barrier()`).
        buffers.operationBoundary()
        publish([input.segmentID.rawValue, output.segmentID.rawValue])
        try rankBarrier.wait()

        var inputs: [UnsafePointer<Double>] = []
        var outputs: [UnsafeMutablePointer<Double>] = []
        for peer in 0..<size {
            if peer == rank {
                inputs.append(UnsafePointer(input.elements(Double.self, count: count).baseAddress!))
                outputs.append(output.elements(Double.self, count: count).baseAddress!)
                continue
            }
            let published = publication(of: peer, count: 2)
            let peerInput = try buffers.peerBytes(of: SegmentID(rawValue: published[0]))
            let peerOutput = try buffers.peerBytes(of: SegmentID(rawValue: published[1]))
            guard peerInput.count >= bytes, peerOutput.count >= bytes else {
                throw CommunicatorError.truncated(source: peer, length: bytes, capacity: min(peerInput.count, peerOutput.count))
            }
            inputs.append(UnsafePointer(peerInput.baseAddress!.assumingMemoryBound(to: Double.self)))
            outputs.append(peerOutput.baseAddress!.assumingMemoryBound(to: Double.self))
        }

        let slice = sliceBounds(of: rank, count: count)
        Self.sum(inputs, into: outputs[rank], range: slice)
        try rankBarrier.wait()

        for peer in 0..<size where peer != rank {
            let range = sliceBounds(of: peer, count: count)
            guard !range.isEmpty else { continue }
            copier.copy(to: outputs[rank] + range.lowerBound, from: outputs[peer] + range.lowerBound,
                        byteCount: range.count * MemoryLayout<Double>.stride, ofMessage: bytes)
        }
        try rankBarrier.wait()
    }

    /// Rank `owner`'s share of `count` elements: contiguous, sizes differing by at most one, and
    /// 8-element aligned so that no two ranks write the same cache line.
    func sliceBounds(of owner: Int, count: Int) -> Range<Int> { Self.sliceBounds(of: owner, ranks: size, count: count) }

    static func sliceBounds(of owner: Int, ranks size: Int, count: Int) -> Range<Int> {
        let lines = (count + 7) / 8
        let start = min(count, lines * owner / size * 8)
        let end = min(count, lines * (owner + 1) / size * 8)
        return start..<end
    }

    /// `destination[range] = Σ sources[range]`, in source order: one pass per pair of sources so
    /// that the loop stays simple enough to vectorize.
    static func sum(_ sources: [UnsafePointer<Double>], into destination: UnsafeMutablePointer<Double>, range: Range<Int>) {
        guard !range.isEmpty else { return }
        let first = sources[0], second = sources[1]
        for index in range { destination[index] = first[index] + second[index] }
        for source in sources.dropFirst(2) {
            for index in range { destination[index] += source[index] }
        }
    }
}
