import XPMEMWire

extension BrokerCore {
    /// The machine is short of memory: drop every page hinted free and not written since, of every
    /// segment. Importers and owners read zeros there afterwards, which is all a free hint promised.
    public mutating func memoryPressure() -> [BrokerEffect] {
        let taken = registry.takeAllFreePages()
        guard !taken.isEmpty else { return [] }
        let bytes = taken.reduce(UInt64(0)) { total, segment in
            segment.1.reduce(total) { $0 + ($1.upperBound - $1.lowerBound) }
        }
        return taken.map { .dropPages($0.0, $0.1) }
            + [.note(.freePagesDropped(segments: taken.count, bytes: bytes))]
    }
}
