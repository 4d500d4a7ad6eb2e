/// Scenario seeds written with the operations `BrokerCoreScenario` reads, so that the fuzzer starts
/// from runs that reach an invalidation and a backing instead of having to find them.
struct ScenarioScript {
    private(set) var bytes: [UInt8] = [2]  // the scenario mode of `fuzzOneInput`

    /// `person` indexes `BrokerCoreScenario.people`; peers are then named by their index among the connected.
    mutating func connect(person: UInt8) { bytes += [0, person, 0] }
    mutating func hello(_ peer: UInt8) { bytes += [1, peer] }
    /// Each request ends with the page-size choice of the file a make carries (0: the base page size).
    mutating func subscribe(_ peer: UInt8) { bytes += [2, peer, 11, 0] }
    /// A segment of `pages` pages, mode 0o644.
    mutating func make(_ peer: UInt8, pages: UInt8) { bytes += [2, peer, 0, pages, 1, 0, 0] }
    /// The whole address space, mode 0o666.
    mutating func makeAddressSpace(_ peer: UInt8) { bytes += [2, peer, 2, 0, 0, 0, 3, 0] }
    /// Gets the `segment`-th segment issued, read-only or read-write.
    mutating func get(_ peer: UInt8, segment: UInt8, readWrite: Bool) { bytes += [2, peer, 4, segment, readWrite ? 1 : 0, 0] }
    mutating func attach(_ peer: UInt8, handle: UInt8, page: UInt8, pages: UInt8) { bytes += [2, peer, 7, handle, page, pages, 0] }
    /// Invalidates pages of the `segment`-th segment with a 100 ms deadline, held for a change.
    mutating func invalidate(_ peer: UInt8, segment: UInt8, page: UInt8, pages: UInt8) {
        bytes += [2, peer, 12, segment, page, pages, 100, 0, 1, 0]
    }
    /// Acknowledges the segment's current invalidation.
    mutating func acknowledge(_ peer: UInt8, segment: UInt8) { bytes += [5, peer, 0, segment, 1] }
    mutating func endInvalidation(_ peer: UInt8, segment: UInt8) { bytes += [2, peer, 13, segment, 1, 0] }
    /// Answers the first waiting `backRange` with two one-page extents, one page apart.
    mutating func backFirstRange(_ peer: UInt8) { bytes += [5, peer, 1, 0, 0, 2, 1, 1, 1, 1] }
    mutating func tickToNextDeadline() { bytes += [8, 1] }
    mutating func depart(_ peer: UInt8) { bytes += [7, peer] }

    static var seeds: [(String, [UInt8])] {
        var invalidation = ScenarioScript()
        invalidation.connect(person: 2)
        invalidation.connect(person: 3)
        for peer: UInt8 in [0, 1] { invalidation.hello(peer); invalidation.subscribe(peer) }
        invalidation.make(0, pages: 4)
        invalidation.get(1, segment: 0, readWrite: false)
        invalidation.attach(1, handle: 0, page: 0, pages: 2)
        invalidation.invalidate(0, segment: 0, page: 0, pages: 2)
        invalidation.acknowledge(1, segment: 0)
        invalidation.endInvalidation(0, segment: 0)
        invalidation.invalidate(0, segment: 0, page: 1, pages: 1)
        invalidation.tickToNextDeadline()
        invalidation.depart(0)

        var backing = ScenarioScript()
        backing.connect(person: 2)
        backing.connect(person: 4)
        for peer: UInt8 in [0, 1] { backing.hello(peer); backing.subscribe(peer) }
        backing.makeAddressSpace(0)
        backing.get(1, segment: 0, readWrite: true)
        backing.attach(1, handle: 0, page: 2, pages: 4)
        backing.backFirstRange(0)
        backing.attach(1, handle: 0, page: 8, pages: 1)
        backing.tickToNextDeadline()
        backing.depart(1)

        var crowd = ScenarioScript()
        for person: UInt8 in [2, 2, 2, 2, 2, 0, 1, 3, 4] { crowd.connect(person: person) }
        for peer: UInt8 in 0..<8 { crowd.hello(peer) }
        for _ in 0..<6 { crowd.make(0, pages: 8) }
        crowd.depart(0)

        return [("scenario-invalidation", invalidation.bytes), ("scenario-backing", backing.bytes),
                ("scenario-quotas", crowd.bytes)]
    }
}
