import Synchronization
import SystemPackage
import XPMEMSystem
import XPMEMWire

/// The exporter's half of free-page hints for one segment (`ExportedSegment.hintFree`): it
/// write-protects hinted pages in this process's mapping, and a thread of its own tells the broker of
/// each write to them (`freeHintWritten`) before letting the write land. So the broker drops a page
/// only if nothing has written it since its hint: a write either reaches the broker first (and the
/// page is kept) or lands on the zero page the drop left (and survives it).
///
/// A write releases the protection of its whole granule (`writeGranule`, clipped to the segment),
/// not just its page: writing a freed buffer again costs one broker round trip per granule rather
/// than one per page, and the broker merely forgets a little more than it must.
final class FreePageTracker: Sendable {
    static let writeGranule = 256 * 1024

    private let protection: WriteProtection
    private let segment: SegmentID
    private let base: UInt
    private let size: Int
    private let channel: BrokerChannel
    /// Held across "protect, then tell the broker" and across "tell the broker, then unprotect": the
    /// broker never hears of a write before the hint that the write ends.
    private let order = Mutex(())

    /// Opens the userfaultfd, registers the segment's mapping and starts the thread that serves writes.
    /// Refuses where the kernel's own writes into a hinted page could not be seen: they would fail
    /// with `EFAULT` in the application instead.
    init(segment: SegmentID, base: UInt, size: Int, channel: BrokerChannel) throws(XPMEMError) {
        let protection: WriteProtection
        do {
            protection = try WriteProtection()
        } catch {
            throw XPMEMError.system("userfaultfd with shmem write-protection (Linux 5.19 or later)", error)
        }
        guard protection.catchesKernelWrites else {
            throw XPMEMError(.permissionDenied,
                "free-page hints need a userfaultfd that also sees the kernel's writes (run as root, give this user access to /dev/userfaultfd, or set vm.unprivileged_userfaultfd=1)",
                errno: .notPermitted)
        }
        do {
            try protection.register(at: UnsafeMutableRawPointer(bitPattern: base)!, length: size)
        } catch {
            throw XPMEMError.system("registering segment \(segment) for write protection", error)
        }
        self.protection = protection
        self.segment = segment
        self.base = base
        self.size = size
        self.channel = channel
        do {
            try DetachedThread.start { [self] in serveWrites() }
        } catch {
            throw XPMEMError.system("starting the free-page hint thread", error)
        }
    }

    /// Protects the range, then records the hint with the broker; returns the pages the broker now
    /// trusts free in the whole segment.
    func hint(offset: Int, length: Int) throws(XPMEMError) -> Int {
        try order.withLock { _ throws(XPMEMError) -> Int in
            do throws(Errno) {
                try protection.protect(at: UnsafeMutableRawPointer(bitPattern: base + UInt(offset))!, length: length)
            } catch {
                throw XPMEMError.system("write-protecting the hinted pages", error)
            }
            let reply = try channel.request(.hintFree(segment, offset: UInt64(offset), length: UInt64(length)))
            guard case .freePages(let count) = reply.message else {
                throw BrokerChannel.unexpected(reply.message, for: .hintFree(segment, offset: 0, length: 0))
            }
            return Int(clamping: count)
        }
    }

    /// Ends the thread; the descriptor closes with it, which wakes any writer still waiting.
    func stop() { protection.stop() }

    private func serveWrites() {
        while true {
            let address: UInt?
            do {
                address = try protection.nextWriteFault()
            } catch {
                return
            }
            guard let address else { return }
            let granule = granule(containing: address)
            order.withLock { _ in
                // Whatever the broker answers (even nothing, when it is gone), the writer must go on:
                // a broker that did not hear of the write has lost its hints with its connection.
                try? channel.requestDone(.freeHintWritten(segment, offset: UInt64(granule.lowerBound - Int(base)),
                                                          length: UInt64(granule.count)))
                protection.unprotect(at: UnsafeMutableRawPointer(bitPattern: granule.lowerBound)!,
                                     length: granule.count)
            }
        }
    }

    /// The write granule around `address`, inside the segment, as addresses.
    private func granule(containing address: UInt) -> Range<Int> {
        let offset = Int(address - base)
        let start = offset - offset % Self.writeGranule
        let end = min(start + Self.writeGranule, size)
        return (Int(base) + start)..<(Int(base) + end)
    }
}
