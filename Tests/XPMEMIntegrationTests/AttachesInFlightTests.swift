import Testing
@testable import XPMEM
import XPMEMWire

/// An attach whose range an event touched while the broker's answer was on its way asks again; one
/// no event touched keeps its mapping.
@Suite("Attaches in flight")
struct AttachesInFlightTests {
    let segment = SegmentID(rawValue: 7)
    let other = SegmentID(rawValue: 8)

    @Test("an attach with no event for its range meanwhile keeps its answer")
    func undisturbed() {
        let inFlight = AttachesInFlight()
        let ticket = inFlight.start(segment, range: 4096..<8192)
        inFlight.disturb(other)
        inFlight.disturb(segment, range: 0..<4096)
        inFlight.disturb(segment, range: 8192..<12288)
        #expect(!inFlight.finish(ticket))
    }

    @Test("an invalidation overlapping the range, a file move or a release of the segment sends it back",
          arguments: [0..<4097, 8191..<9000, 0..<UInt64.max, nil] as [Range<UInt64>?])
    func disturbed(by event: Range<UInt64>?) {
        let inFlight = AttachesInFlight()
        let ticket = inFlight.start(segment, range: 4096..<8192)
        let bystander = inFlight.start(other, range: 4096..<8192)
        inFlight.disturb(segment, range: event)
        #expect(inFlight.finish(ticket))
        #expect(!inFlight.finish(bystander))
    }

    @Test("an event before the attach started, or after it finished, does not send it back")
    func outsideTheFlight() {
        let inFlight = AttachesInFlight()
        inFlight.disturb(segment)
        let ticket = inFlight.start(segment, range: 0..<4096)
        #expect(!inFlight.finish(ticket))
        inFlight.disturb(segment)
        let next = inFlight.start(segment, range: 0..<4096)
        #expect(!inFlight.finish(next))
    }
}
