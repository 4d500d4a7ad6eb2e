import Testing
import XPMEMBrokerCore
import XPMEMWire

/// Free-page hints: the owner hints pages free, reports its writes, and the broker drops only pages
/// hinted and not written since, and none once anyone else could write the file unseen.
struct BrokerCoreFreePageTests {
    /// The `dropPages` effects since `mark`.
    private func dropped(_ broker: BrokerCoreHarness, since mark: Int) -> [(SegmentID, [Range<UInt64>])] {
        broker.effects[mark...].compactMap { effect in
            guard case .dropPages(let segment, let ranges) = effect else { return nil }
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
}
