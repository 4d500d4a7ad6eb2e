import Testing
@testable import XPMEM
import XPMEMSystem
import XPMEMWire

/// The event thread's list of attachments with a window open, with real mappings of a real memfd:
/// attachments detached during their window (which no `end` reaches) must not pile up.
@Suite("Suspended attachments of one connection")
struct SuspendedAttachmentsTests {
    private static let length = 4 * pageSize

    /// An attachment of a fresh memfd, `.revoke` policy (no userfaultfd needed).
    private func attachment(_ number: UInt64) throws -> AttachedRange {
        let file = try MemoryFile.create(name: "suspended-attachments-test", size: Self.length)
        let mapping = try MemoryMapping.mapShared(file, offset: 0, length: Self.length, protection: .readWrite,
                                                  placement: .anywhere)
        return AttachedRange(id: AttachmentID(rawValue: number), generation: 1, segment: SegmentID(rawValue: 7),
                             segmentOffset: 0, mapping: mapping, file: file, protection: .readWrite, policy: .revoke,
                             handlers: InvalidationHandlers(), gate: nil)
    }

    private func openWindow(on range: AttachedRange, sequence: UInt64) {
        range.suspend(InvalidationNotice(segment: range.segment, attachment: range.id, sequence: sequence,
                                         reason: .reuse, offset: 0, length: Self.length))
    }

    @Test("An attachment without an open window is not kept; one whose last window ends is dropped")
    func keptOnlyWithAnOpenWindow() throws {
        var suspended = SuspendedAttachments()
        let detached = try attachment(1)
        detached.unmap()
        #expect(!detached.isMapped && detached.unmap() == false, "a detached range still looks mapped")
        openWindow(on: detached, sequence: 1)
        #expect(!detached.hasOpenWindows, "a window opened on a detached range")
        suspended.insert(detached)
        #expect(suspended.all.isEmpty, "a detached attachment opens no window and is not kept")

        let live = try attachment(2)
        openWindow(on: live, sequence: 1)
        suspended.insert(live)
        #expect(suspended.all.map(\.id) == [live.id])
        #expect(live.resume(sequence: 1) != nil)
        suspended.windowEnded(on: live)
        #expect(suspended.all.isEmpty)
        live.unmap()
    }

    @Test("Attachments detached during their window are swept on insertion, not only at an end")
    func detachedDuringTheirWindowAreSwept() throws {
        var suspended = SuspendedAttachments()
        var detachedLater: [AttachedRange] = []
        for number in 1...40 {
            let range = try attachment(UInt64(number))
            openWindow(on: range, sequence: 1)
            suspended.insert(range)
            // Detached while its window is open: no `end` will reach it through the table.
            range.unmap()
            detachedLater.append(range)
        }
        #expect(suspended.all.count <= 16, "\(suspended.all.count) detached attachments kept")
        let live = try attachment(100)
        openWindow(on: live, sequence: 2)
        suspended.insert(live)
        #expect(suspended.all.map(\.id).contains(live.id), "an attachment with an open window was dropped")
        live.unmap()
    }
}
