/// What one uid may hold, and how many descriptors the broker may spend on clients at all. Without
/// these, one local user could exhaust the broker's descriptors (connections, or segments whose files
/// each keep two memfd descriptors) and lock every other user out.
///
/// Administrators — root and the uid the broker runs as — are exempt from the per-uid quotas and may
/// use `administratorReserve`, the part of the descriptor budget kept for them, so that they can still
/// connect, list and clean up when everybody else is at the limit.
public struct BrokerQuotas: Equatable, Sendable {
    public var connectionsPerUID = 256
    public var segmentsPerUID = 2048
    /// Declared sizes of a uid's segments, summed (memfds are sparse: this bounds what may be faulted in).
    public var bytesPerUID: UInt64 = 1 << 42
    /// Descriptors the broker may hold for clients: its RLIMIT_NOFILE less what it needs for itself.
    public var descriptorBudget = 16_000
    public var administratorReserve = 256
    /// The uid the broker runs as.
    public var brokerUID: UInt32 = 0

    public init() {}

    /// Descriptors the broker holds per connection (socket, pidfd, event socket) and per file a segment
    /// has (its memfd read-write and read-only; a client's windows of one address-space file share them).
    public static let descriptorsPerConnection = 3
    public static let descriptorsPerFile = 2

    func isAdministrator(_ credentials: Credentials) -> Bool {
        credentials.isSuperuser || credentials.uid == brokerUID
    }

    /// The descriptors a client with these credentials may see in use before it is refused.
    func descriptorCeiling(for credentials: Credentials) -> Int {
        isAdministrator(credentials) ? descriptorBudget : descriptorBudget - administratorReserve
    }
}
