@preconcurrency import Glibc
import Synchronization
import Testing
@testable import XPMEM
import XPMEMSystem
import XPMEMWire

/// An attach whose range an event touched while the broker's answer was on its way never goes into
/// the table (so no event handled it), and asks again once the windows that sent it back are over;
/// one no event touched goes in. Real events race real attaches in the integration suites; here each
/// interleaving is set up by hand.
@Suite("Attaches in flight")
struct AttachesInFlightTests {
    let segment = SegmentID(rawValue: 7)
    let other = SegmentID(rawValue: 8)

    @Test("an attach with no event for its range meanwhile keeps its answer")
    func undisturbed() {
        var inFlight = AttachesInFlight()
        let ticket = inFlight.start(segment, range: 4096..<8192)
        inFlight.disturb(other, range: nil, window: 1)
        inFlight.disturb(segment, range: 0..<4096, window: 2)
        inFlight.disturb(segment, range: 8192..<12288, window: 3)
        #expect(inFlight.finish(ticket) == nil)
        #expect(inFlight.openWindows.isEmpty)
    }

    @Test("an invalidation overlapping the range sends it back until that window ends")
    func disturbedByAWindow() {
        var inFlight = AttachesInFlight()
        let ticket = inFlight.start(segment, range: 4096..<8192)
        let bystander = inFlight.start(other, range: 4096..<8192)
        inFlight.disturb(segment, range: 8191..<9000, window: 5)
        let window = AttachesInFlight.Window(segment: segment, sequence: 5)
        #expect(inFlight.finish(ticket) == [window])
        #expect(inFlight.finish(bystander) == nil)
        #expect(inFlight.openWindows == [window])
        inFlight.windowEnded(window)
        #expect(inFlight.openWindows.isEmpty)
    }

    @Test("a release of the segment ends its windows: nobody waits for an end that will not come")
    func releaseEndsWindows() {
        var inFlight = AttachesInFlight()
        let ticket = inFlight.start(segment, range: 0..<4096)
        let bystander = inFlight.start(other, range: 0..<4096)
        inFlight.disturb(segment, range: nil, window: 3)
        inFlight.disturb(other, range: nil, window: 4)
        _ = inFlight.finish(ticket)
        _ = inFlight.finish(bystander)
        inFlight.windowsEnded(of: segment)
        #expect(inFlight.openWindows == [AttachesInFlight.Window(segment: other, sequence: 4)])
    }

    @Test("a file move or a release of the segment sends it back at once")
    func disturbedWithoutAWindow() {
        var inFlight = AttachesInFlight()
        let ticket = inFlight.start(segment, range: 0..<4096)
        inFlight.disturb(segment, range: nil, window: nil)
        #expect(inFlight.finish(ticket) == [])
    }

    @Test("an event before the attach started, or after it finished, does not send it back")
    func outsideTheFlight() {
        var inFlight = AttachesInFlight()
        inFlight.disturb(segment, range: nil, window: 1)
        let ticket = inFlight.start(segment, range: 0..<4096)
        #expect(inFlight.finish(ticket) == nil)
        inFlight.disturb(segment, range: nil, window: 2)
        let next = inFlight.start(segment, range: 0..<4096)
        #expect(inFlight.finish(next) == nil)
    }

    @Test("the table: a thread waiting for the window that sent its attach back wakes when it ends, not before")
    func tableWaitsForTheWindow() throws {
        let table = AttachmentTable()
        let ticket = table.startAttach(of: segment, range: 0..<4096)
        #expect(table.rangesForEvent(of: segment, touching: nil, window: 10).isEmpty)
        let window = AttachesInFlight.Window(segment: segment, sequence: 10)
        let returned = Mutex(false)
        try DetachedThread.start {
            table.waitForEnd(of: [window])
            returned.withLock { $0 = true }
        }
        usleep(20_000)
        let early = returned.withLock { $0 }
        #expect(!early, "the waiter returned while the window was open")
        table.windowEnded(of: segment, sequence: 10)
        let deadline = ContinuousClock.now + .seconds(10)
        while !returned.withLock({ $0 }) && ContinuousClock.now < deadline { usleep(1000) }
        let woke = returned.withLock { $0 }
        #expect(woke, "the waiter did not wake after the window ended")
        // A failed attach (no range) is never sent back.
        #expect(table.finishAttach(ticket, inserting: nil) == nil)
    }
}
