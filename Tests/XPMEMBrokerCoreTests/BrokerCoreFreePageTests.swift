import Testing
import XPMEMBrokerCore
import XPMEMWire

/// Free-page hints: the owner hints pages free, reports its writes, and the broker drops only pages
/// hinted and not written since, and none once anyone else could write the file unseen.
struct BrokerCoreFreePageTests {
    /// The `dropPages` effects since `mark`.
    private func dropped(_ broker: BrokerCoreHarness, since mark: Int) -> [(SegmentID, [Range<UInt64>])] {
        broker.effects[mark...].compactMap { effect in
            guard case .dropPages(let segment, let ranges, _) = effect else { return nil }
            return (segment, ranges)
        }
    }

    @Test func onlyPagesHintedAndNotWrittenSinceAreDroppedAndTheCountSaysSo() {
        var broker = BrokerCoreHarness()
        let (owner, _) = broker.join(People.owner)
        let segment = broker.make(size: 16 * page, by: owner)
        #expect(broker.request(.hintFree(segment, offset: 0, length: 8 * page), from: owner) == .freePages(count: 8))
        // Adjacent and overlapping hints merge; the count is the segment's total.
        #expect(broker.request(.hintFree(segment, offset: 6 * page, length: 4 * page), from: owner) == .freePages(count: 10))
        #expect(broker.request(.freeHintWritten(segment, offset: 2 * page, length: 2 * page), from: owner) == .done)
        #expect(broker.core.registry.segments[segment]?.freePages.ranges == [0..<2 * page, 4 * page..<10 * page])

        let mark = broker.mark
        #expect(broker.request(.dropFreePages(segment), from: owner) == .freePages(count: 8))
        let drops = dropped(broker, since: mark)
        #expect(drops.count == 1 && drops.first?.0 == segment)
        #expect(drops.first?.1 == [0..<2 * page, 4 * page..<10 * page])
        // The drop comes before the answer: a migration that follows finds the holes.
        let dropIndex = broker.effects[mark...].firstIndex { if case .dropPages = $0 { true } else { false } }
        let answerIndex = broker.effects[mark...].firstIndex { if case .send = $0 { true } else { false } }
        #expect(dropIndex != nil && answerIndex != nil && dropIndex! < answerIndex!)
        // Dropped pages are forgotten: a second drop has nothing to do.
        let again = broker.mark
        #expect(broker.request(.dropFreePages(segment), from: owner) == .freePages(count: 0))
        #expect(dropped(broker, since: again).isEmpty)
    }

    @Test func aWritableAttachmentByAnyoneEndsEveryHintUntilTheFileIsReplaced() {
        var broker = BrokerCoreHarness()
        let (owner, _) = broker.join(People.owner)
        let (reader, _) = broker.join(People.stranger)
        let (writer, _) = broker.join(People.ownerElsewhere)
        let segment = broker.make(size: 8 * page, permit: 0o644, by: owner)
        // A read-only importer cannot write: hints stay.
        _ = broker.attach(segment, access: .readOnly, length: 8 * page, by: reader)
        #expect(broker.request(.hintFree(segment, offset: 0, length: 4 * page), from: owner) == .freePages(count: 4))
        // A read-write one could write anywhere in the file without anyone seeing it.
        let (_, writable) = broker.attach(segment, access: .readWrite, offset: 4 * page, length: page, by: writer)
        #expect(broker.core.registry.segments[segment]?.freePages.ranges == [])
        #expect(broker.request(.hintFree(segment, offset: 0, length: 4 * page), from: owner) == .freePages(count: 0))
        let mark = broker.mark
        #expect(broker.request(.dropFreePages(segment), from: owner) == .freePages(count: 0))
        broker.memoryPressure()
        #expect(dropped(broker, since: mark).isEmpty)

        // A fresh file nobody else holds yet: hints count again, until it goes out read-write (the
        // writer is sent it, as it still maps the segment).
        #expect(broker.request(.replaceSegmentFiles(segment), from: owner) == .done)
        #expect(broker.core.registry.segments[segment]?.freePages.writableFileHandedOut == true)
        #expect(broker.request(.detach(writable), from: writer) == .done)
        #expect(broker.request(.replaceSegmentFiles(segment), from: owner) == .done)
        #expect(broker.request(.hintFree(segment, offset: 0, length: 2 * page), from: owner) == .freePages(count: 2))
    }

    @Test func memoryPressureDropsTheFreePagesOfEverySegmentOnce() {
        var broker = BrokerCoreHarness()
        let (first, _) = broker.join(People.owner)
        let (second, _) = broker.join(People.stranger)
        let one = broker.make(size: 4 * page, by: first)
        let other = broker.make(size: 4 * page, by: second)
        let untouched = broker.make(size: 4 * page, by: second)
        broker.request(.hintFree(one, offset: page, length: page), from: first)
        broker.request(.hintFree(other, offset: 0, length: 4 * page), from: second)
        let mark = broker.mark
        broker.memoryPressure()
        let drops = dropped(broker, since: mark)
        #expect(Set(drops.map(\.0)) == [one, other])
        #expect(drops.first { $0.0 == one }?.1 == [page..<2 * page])
        #expect(drops.first { $0.0 == other }?.1 == [0..<4 * page])
        #expect(!drops.contains { $0.0 == untouched })
        #expect(broker.effects[mark...].contains(.note(.freePagesDropped(segments: 2, bytes: 5 * page))))
        let again = broker.mark
        broker.memoryPressure()
        #expect(broker.effects.count == again, "a second pressure event found something left to drop")
    }

    @Test func hintsAreTheOwnersAndOnlyForWholePagesOfOrdinarySegments() {
        var broker = BrokerCoreHarness()
        let (owner, _) = broker.join(People.owner)
        let (other, _) = broker.join(People.ownerElsewhere)
        let segment = broker.make(size: 4 * page, by: owner)
        for refused in [Message.hintFree(segment, offset: 0, length: page), .freeHintWritten(segment, offset: 0, length: page),
                        .dropFreePages(segment)] {
            guard case .failure(.permissionDenied, _) = broker.request(refused, from: other) else {
                Issue.record("\(refused) by another client of the same uid was not refused")
                continue
            }
        }
        for (offset, length) in [(1, page), (0, page + 1), (0, 5 * page), (UInt64.max - page + 1, 2 * page)] {
            guard case .failure(.invalidArgument, _) = broker.request(.hintFree(segment, offset: offset, length: length),
                                                                    from: owner) else {
                Issue.record("hintFree(\(offset), \(length)) was not refused as invalid")
                continue
            }
        }
        guard case .made(let window) = broker.request(.makeAddressSpace(base: 0, size: AddressSpace.maximumSize,
                                                                        permit: Permit(rawValue: 0o600), name: "as"),
                                                      from: owner) else {
            Issue.record("makeAddressSpace was refused")
            return
        }
        guard case .failure(.invalidArgument, _) = broker.request(.hintFree(window, offset: 0, length: page), from: owner)
        else {
            Issue.record("a hint on an address-space window was not refused")
            return
        }
        #expect(broker.core.registry.segments[segment]?.freePages.ranges == [])
    }

    @Test func aHostileOwnerCannotMakeTheBrokerKeepUnboundedHints() {
        var broker = BrokerCoreHarness()
        let (owner, _) = broker.join(People.owner)
        let pages = UInt64(FreePageHints.maximumRanges) * 2 + 2
        let segment = broker.make(size: pages * page, by: owner)
        var refusal: Message? = nil
        for index in stride(from: 0, to: pages, by: 2) {
            let reply = broker.request(.hintFree(segment, offset: index * page, length: page), from: owner)
            if case .failure = reply { refusal = reply; break }
        }
        guard case .failure(.resourceExhausted, _)? = refusal else {
            Issue.record("every other page hinted separately was never refused: \(String(describing: refusal))")
            return
        }
        #expect(broker.core.registry.segments[segment]?.freePages.ranges.count == FreePageHints.maximumRanges)
        // A hint that merges ranges is still taken.
        #expect(broker.request(.hintFree(segment, offset: 0, length: 8 * page), from: owner)
                    == .freePages(count: UInt64(FreePageHints.maximumRanges) + 4))
    }

    @Test func aSegmentRegisteredAgainKeepsNoHintsUntilItsFileIsReplaced() {
        // A restarted broker: importers may still map the old life's file read-write.
        let token = ReclaimToken(high: 0x5eed, low: 7)
        var first = BrokerCoreHarness()
        let (exporter, _) = first.join(People.owner)
        guard case .made(let id) = first.request(.claim(nil, token: token, size: 4 * page, permit: Permit(rawValue: 0o644),
                                                        name: "r"), from: exporter) else {
            Issue.record("the first claim was refused")
            return
        }
        #expect(first.request(.hintFree(id, offset: 0, length: page), from: exporter) == .freePages(count: 1))
        var second = BrokerCoreHarness(ids: [id.rawValue])
        let (returning, _) = second.join(People.owner)
        #expect(second.request(.claim(id, token: token, size: 4 * page, permit: Permit(rawValue: 0o644), name: "r"),
                               from: returning) == .made(id))
        #expect(second.request(.hintFree(id, offset: 0, length: page), from: returning) == .freePages(count: 0))
        #expect(second.request(.replaceSegmentFiles(id), from: returning) == .done)
        #expect(second.request(.hintFree(id, offset: 0, length: page), from: returning) == .freePages(count: 1))
    }

    @Test func writesThatSplitRangesNeverKeepMoreThanTheBoundAndForgetInstead() {
        var broker = BrokerCoreHarness()
        let (owner, _) = broker.join(People.owner)
        let pages = UInt64(FreePageHints.maximumRanges) * 3
        let segment = broker.make(size: pages * page, by: owner)
        #expect(broker.request(.hintFree(segment, offset: 0, length: pages * page), from: owner) == .freePages(count: pages))
        for index in stride(from: UInt64(1), to: pages, by: 2) {
            broker.request(.freeHintWritten(segment, offset: index * page, length: page), from: owner)
        }
        let ranges = broker.core.registry.segments[segment]?.freePages.ranges ?? []
        #expect(ranges.count <= FreePageHints.maximumRanges)
        // No written page is still trusted free.
        let written = stride(from: UInt64(1), to: pages, by: 2).map { $0 * page }
        #expect(!written.contains { offset in ranges.contains { $0.contains(offset) } })
        #expect(ranges.allSatisfy { $0.lowerBound % (2 * page) == 0 && $0.count == Int(page) })
    }

    @Test func oneMemoryPressureEventDropsABoundedAmountAndTheNextTheRest() {
        var broker = BrokerCoreHarness()
        let (owner, _) = broker.join(People.owner)
        // Three segments of 3000 separate ranges each: two fill one event's budget of 4096.
        let segments = (0..<3).map { _ in broker.make(size: 6000 * page, by: owner) }
        for segment in segments {
            for index in stride(from: UInt64(0), to: 6000, by: 2) {
                broker.request(.hintFree(segment, offset: index * page, length: page), from: owner)
            }
        }
        func dropsOfOneEvent() -> [SegmentID] {
            let mark = broker.mark
            broker.memoryPressure()
            return dropped(broker, since: mark).map(\.0)
        }
        let first = dropsOfOneEvent()
        #expect(first.count == 3 - 1, "the first event took \(first.count) segments' ranges")
        #expect(dropsOfOneEvent().count == 1)
        #expect(dropsOfOneEvent().isEmpty)
    }
}
