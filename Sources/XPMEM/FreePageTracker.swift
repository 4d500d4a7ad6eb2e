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
///
/// Stopped (the segment is removed, or its mapping is about to be replaced), it takes no more hints;
/// its thread ends and its descriptor closes, which lifts every protection and wakes every writer.
final class FreePageTracker: Sendable {
    static let writeGranule = 256 * 1024

    private let protection: WriteProtection
    private let segment: SegmentID
    private let base: UInt
    private let size: Int
    private let channel: BrokerChannel
    /// Held across "protect, then tell the broker", across "tell the broker, then unprotect", and to
    /// stop: the broker never hears of a write before the hint that the write ends, and no hint is
    /// sent once the tracker has stopped. True once stopped.
    private let stopped = Mutex(false)

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
    /// trusts free in the whole segment, or nil once the tracker has stopped (ask a new one).
    func hint(offset: Int, length: Int) throws(XPMEMError) -> Int? {
        try stopped.withLock { stopped throws(XPMEMError) -> Int? in
            guard !stopped else { return nil }
            do throws(Errno) {
                try protection.protect(at: UnsafeMutableRawPointer(bitPattern: base + UInt(offset))!, length: length)
            } catch {
                throw XPMEMError.system("write-protecting the hinted pages", error)
            }
            let message = Message.hintFree(segment, offset: UInt64(offset), length: UInt64(length))
            let answer: Message
            do throws(XPMEMError) {
                answer = try channel.request(message).message
            } catch where error.code == .protocolError && error.message.contains("unknownType") {
                throw XPMEMError(.invalidArgument, "this broker predates free-page hints; upgrade xpmemd")
            }
            guard case .freePages(let count) = answer else { throw BrokerChannel.unexpected(answer, for: message) }
            // Nothing trusted (a writable descriptor is out): watching writes would only cost round trips.
            if count == 0 {
                protection.unprotect(at: UnsafeMutableRawPointer(bitPattern: base + UInt(offset))!, length: length)
            }
            return Int(clamping: count)
        }
    }

    /// Has the broker forget every hint of the segment, then takes no more hints and ends the thread
    /// (after a hint or a write report in flight). The descriptor closes with the thread, which lifts
    /// every protection and wakes any writer: the broker must not trust a hint from then on, whatever
    /// happens next (a move that fails half-way, a removal the broker refuses).
    func forgetHintsAndStop() {
        stopped.withLock { stopped in
            if !stopped { try? channel.requestDone(.freeHintWritten(segment, offset: 0, length: UInt64(size))) }
            stopped = true
        }
        protection.stop()
    }

    private func serveWrites() {
        while true {
            let address: UInt?
            do {
                address = try protection.nextWriteFault()
            } catch {
                giveUp()
                return
            }
            guard let address else { return }
            guard let granule = granule(containing: address) else {
                // Not the segment's (it cannot be, as only the segment is registered): let it go.
                protection.unprotect(at: UnsafeMutableRawPointer(bitPattern: address & ~UInt(pageSize - 1))!,
                                     length: pageSize)
                continue
            }
            stopped.withLock { _ in
                // Whatever the broker answers (even nothing, when it is gone), the writer must go on:
                // a broker that did not hear of the write has lost its hints with its connection (and
                // does not drop pages of an owner that hung up).
                try? channel.requestDone(.freeHintWritten(segment, offset: UInt64(granule.lowerBound - Int(base)),
                                                          length: UInt64(granule.count)))
                protection.unprotect(at: UnsafeMutableRawPointer(bitPattern: granule.lowerBound)!,
                                     length: granule.count)
            }
        }
    }

    /// The thread cannot read write faults any more: every hint of the segment is given up (the
    /// broker forgets them, so it drops nothing a later write might land on), the registration ends,
    /// which wakes every writer, and no more hints are taken.
    private func giveUp() {
        stopped.withLock { stopped in
            stopped = true
            try? channel.requestDone(.freeHintWritten(segment, offset: 0, length: UInt64(size)))
            protection.unregister(at: UnsafeMutableRawPointer(bitPattern: base)!, length: size)
        }
    }

    /// The write granule around `address`, inside the segment, as addresses; nil outside it.
    private func granule(containing address: UInt) -> Range<Int>? {
        guard address >= base, address - base < UInt(size) else { return nil }
        let offset = Int(address - base)
        let start = offset - offset % Self.writeGranule
        let end = min(start + Self.writeGranule, size)
        return (Int(base) + start)..<(Int(base) + end)
    }
}
