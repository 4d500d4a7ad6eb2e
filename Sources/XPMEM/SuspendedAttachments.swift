/// The attachments of one connection with an invalidation window open, as the event thread knows
/// them: when the broker goes away, their windows are ended by hand. Kept by the event thread alone.
///
/// An attachment leaves when its last window ends. One detached during a window is no longer in the
/// attachment table, so no `end` reaches it here; detaching ended its windows, and a sweep drops it.
/// The sweep runs only once more attachments are kept than windows are plausibly open on, so the
/// usual `end` (one window on one attachment) allocates nothing.
struct SuspendedAttachments {
    private var ranges: [ObjectIdentifier: AttachedRange] = [:]
    private var sweepThreshold = Self.minimumSweepThreshold
    private static let minimumSweepThreshold = 16

    /// Keeps `range` if a window is open on it (one detached meanwhile has none, and no `end` would
    /// ever drop it).
    mutating func insert(_ range: AttachedRange) {
        guard range.hasOpenWindows else { return }
        ranges[ObjectIdentifier(range)] = range
        sweepIfDue()
    }

    mutating func remove(_ range: AttachedRange) { ranges[ObjectIdentifier(range)] = nil }

    /// Drops `range` if its windows have all ended, and any detached attachment when it is time to look.
    mutating func windowEnded(on range: AttachedRange) {
        if !range.hasOpenWindows { remove(range) }
        sweepIfDue()
    }

    /// Attachments detached during a window are found here, not by an `end`: looked for once more are
    /// kept than windows are plausibly open on, on every insertion as on every `end`, so that they
    /// cannot pile up on a connection whose other attachments see no `end`.
    private mutating func sweepIfDue() {
        guard ranges.count > sweepThreshold else { return }
        ranges = ranges.filter { $0.value.hasOpenWindows }
        sweepThreshold = max(Self.minimumSweepThreshold, 2 * ranges.count)
    }

    /// Every attachment kept, in attachment order.
    var all: [AttachedRange] { ranges.values.sorted { $0.id.rawValue < $1.id.rawValue } }
}
