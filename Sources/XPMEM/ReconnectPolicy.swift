import XPMEMSystem

/// What the library does when the broker goes away (killed, crashed, restarted by systemd): try to
/// reach a broker at the same socket again, in the background, waiting `firstDelay`, then twice as
/// long each time up to `maximumDelay`, for at most `giveUpAfter`. On success it registers this
/// connection's segments again under the same ids, gets its grants again and re-registers its
/// attachments, so that invalidations reach them again. A grant whose segment is not back yet (its
/// exporter has not reconnected) is retried the same way, for up to `giveUpAfter` after the
/// reconnection.
public struct ReconnectPolicy: Sendable, Equatable {
    public var isEnabled: Bool
    public var firstDelay: Duration
    public var maximumDelay: Duration
    public var giveUpAfter: Duration

    public init(isEnabled: Bool = true, firstDelay: Duration = .milliseconds(10), maximumDelay: Duration = .seconds(1),
                giveUpAfter: Duration = .seconds(60)) {
        self.isEnabled = isEnabled
        self.firstDelay = firstDelay
        self.maximumDelay = maximumDelay
        self.giveUpAfter = giveUpAfter
    }

    /// Reconnect for up to a minute.
    public static let standard = ReconnectPolicy()
    /// Never reconnect: after the broker goes away every request fails with `brokerUnavailable`, and
    /// no connection event is told (the behaviour before reconnection existed).
    public static let disabled = ReconnectPolicy(isEnabled: false)

    /// `standard`, or as `XPMEM_RECONNECT_SECONDS` says: 0 disables reconnection, N gives up after N s.
    public static var fromEnvironment: ReconnectPolicy {
        guard let text = ThisProcess.environment("XPMEM_RECONNECT_SECONDS"), let seconds = Int(text), seconds >= 0 else {
            return .standard
        }
        return seconds == 0 ? .disabled : ReconnectPolicy(giveUpAfter: .seconds(seconds))
    }
}

/// What happened to a connection whose broker went away, told to the handler set with
/// `XPMEMBroker.setConnectionEventHandler` (on a thread of the library's own).
public enum BrokerConnectionEvent: Sendable, Equatable {
    /// The broker went away; requests fail with `brokerUnavailable` while the library reconnects.
    case lost(reason: String)
    /// A broker answers again and what could be restored at once is.
    case reconnected(Restoration)
    /// A grant whose segment was not back at the reconnection was obtained again later, with its
    /// attachments (how many).
    case grantRestored(SegmentID, attachments: Int)
    /// A segment or grant that cannot be restored (refused, or its segment did not come back in
    /// time). Its mapping keeps working, but no invalidation reaches it any more.
    case abandoned(SegmentID, reason: String)
    /// No broker answered within `giveUpAfter`: requests keep failing with `brokerUnavailable`.
    case gaveUp(reason: String)
}

/// What a reconnection restored.
public struct Restoration: Sendable, Equatable {
    /// This connection's new number and the new broker's process.
    public var clientID: ClientID
    public var brokerPID: Int32
    /// Segments registered again under their ids.
    public var segments: [SegmentID] = []
    /// Segments whose grants were obtained again (one entry per grant), and their attachments.
    public var grants: [SegmentID] = []
    public var attachments = 0
    /// Grants whose segment was not back yet: retried in the background (`grantRestored` follows).
    public var pending: [SegmentID] = []
}
