import XPMEMSystem

/// Ours and its reference measured alternately, a batch of each per pair (A B, then B A, …), so that
/// the machine's speed drifting between them hits both alike. A pair's ratio is ours / reference (a
/// time over a time, or a bandwidth over a bandwidth); the figure is the median of the pairs' ratios,
/// with their minimum and maximum. Pairs are added until the spread is under `spreadBound` (after
/// `minimumPairs`), or `maximumPairs` or the time budget is spent — then the figure says it did not
/// settle.
struct InterleavedRatio {
    var minimumPairs = 5
    var maximumPairs = 25
    /// (maximum − minimum) / median of the pairs' ratios.
    var spreadBound = 0.2
    var budgetSeconds = 30.0

    /// `ours` and `reference` each measure one batch and return its median.
    func measure(ours: () throws -> Double, reference: () throws -> Double) rethrows -> RatioFigure {
        var ratios: [Double] = []
        var oursValues = Samples(), referenceValues = Samples()
        let started = SharedMemoryAccess.monotonicNanoseconds()
        var settled = false
        while ratios.count < maximumPairs {
            let (mine, theirs): (Double, Double)
            if ratios.count % 2 == 0 {
                mine = try ours()
                theirs = try reference()
            } else {
                theirs = try reference()
                mine = try ours()
            }
            oursValues.add(mine)
            referenceValues.add(theirs)
            ratios.append(mine / theirs)
            if ratios.count >= minimumPairs {
                let figure = RatioFigure(ratios: ratios, ours: oursValues.median, reference: referenceValues.median, settled: true)
                if figure.spread <= spreadBound {
                    settled = true
                    break
                }
            }
            if Double(SharedMemoryAccess.monotonicNanoseconds() - started) / 1e9 > budgetSeconds, ratios.count >= 3 { break }
        }
        return RatioFigure(ratios: ratios, ours: oursValues.median, reference: referenceValues.median, settled: settled)
    }
}

/// One ratio as measured by `InterleavedRatio`.
struct RatioFigure: Encodable {
    var median: Double
    var minimum: Double
    var maximum: Double
    var pairs: Int
    /// Whether the spread came under the bound; false: the budget ran out first.
    var settled: Bool
    /// The medians of ours' and of the reference's batch values.
    var ours: Double
    var reference: Double

    var spread: Double { median > 0 ? (maximum - minimum) / median : .infinity }

    init(ratios: [Double], ours: Double, reference: Double, settled: Bool) {
        var samples = Samples()
        ratios.forEach { samples.add($0) }
        median = samples.median
        minimum = ratios.min() ?? .nan
        maximum = ratios.max() ?? .nan
        pairs = ratios.count
        self.settled = settled
        self.ours = ours
        self.reference = reference
    }

    /// "1.23 (1.10–1.41, 9 pairs)", with "not settled" when it did not.
    var summary: String {
        let range = "\(Format.ratioValue(minimum))–\(Format.ratioValue(maximum)), \(pairs) pairs"
        return "\(Format.ratioValue(median)) (\(range)\(settled ? "" : ", not settled"))"
    }
}

/// A raw reference process answering in one discipline (polling or blocking), measured a batch at a time.
protocol RawBatches {
    func batch(_ count: Int) throws -> Samples
    /// How many of its processes may go on spinning (for up to `RawPeerSpin.microseconds`) after a
    /// batch ends: none for a blocking reference.
    var processesSpinningAfterBatch: Int { get }
}

/// The bare minimum of a raw reference is the faster of its two ways to wait: each pair's reference
/// batch runs both, keeps their samples for the table, and counts the faster median. The polled one
/// runs second and is followed by a pause until its peers stop spinning, so that neither the blocking
/// batch nor ours runs beside them. Without a polled variant (see `RawPeerSpin.worthPolling`) the
/// blocking one is the reference.
struct FasterOfTwoWaits {
    private(set) var polled = Samples()
    private(set) var blocking = Samples()

    mutating func batch(_ count: Int, polled polledPeer: (any RawBatches)?, blocking blockingPeer: some RawBatches) throws
        -> Double
    {
        let blockingSamples = try blockingPeer.batch(count)
        blocking.add(contentsOf: blockingSamples)
        guard let polledPeer else { return blockingSamples.median }
        let polledSamples = try polledPeer.batch(count)
        RawPeerSpin.waitForQuiet(after: polledPeer.processesSpinningAfterBatch)
        polled.add(contentsOf: polledSamples)
        return min(polledSamples.median, blockingSamples.median)
    }
}

/// Ours against a raw reference's faster wait, the way the attach and invalidate groups measure:
/// `warmUp` of each first (first connections, first faults of the code paths), then interleaved
/// batches of `batch`. Returns the pair-by-pair figure and every sample of both sides.
func measureAgainstFasterOfTwoWaits(
    batch: Int, warmUp: Int, ours oursBatch: (Int) throws -> Samples, polled: (any RawBatches)?,
    blocking: some RawBatches
) throws -> (figure: RatioFigure, ours: Samples, raw: FasterOfTwoWaits) {
    _ = try oursBatch(warmUp)
    _ = try blocking.batch(warmUp)
    if let polled {
        _ = try polled.batch(warmUp)
        RawPeerSpin.waitForQuiet(after: polled.processesSpinningAfterBatch)
    }
    var ours = Samples(), raw = FasterOfTwoWaits()
    let figure = try InterleavedRatio().measure(
        ours: {
            let samples = try oursBatch(batch)
            ours.add(contentsOf: samples)
            return samples.median
        },
        reference: { try raw.batch(batch, polled: polled, blocking: blocking) })
    return (figure, ours, raw)
}
