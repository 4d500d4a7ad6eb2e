import XPMEM

/// What can go wrong between ranks.
public enum CommunicatorError: Error, CustomStringConvertible {
    /// The job's environment does not say who this rank is.
    case missingEnvironment(String)
    /// A peer never published its control segment within the deadline.
    case rendezvousTimedOut(rank: Int, path: String)
    /// A peer's control segment went away: the peer exited or closed its connection.
    case peerGone(rank: Int)
    /// The next message from `source` is not the one `receive` asked for.
    case tagMismatch(source: Int, expected: Int, found: Int)
    /// The next message from `source` does not fit the receive buffer.
    case truncated(source: Int, length: Int, capacity: Int)
    /// A rank number outside 0..<size, or this rank itself where a peer is needed.
    case invalidRank(Int)
    /// A buffer that a single-copy collective needs in communicator memory is not.
    case notCommunicatorMemory(String)
    case broker(XPMEMError)

    public var description: String {
        switch self {
        case .missingEnvironment(let detail): "not started as a rank of a job: \(detail)"
        case .rendezvousTimedOut(let rank, let path): "rank \(rank) did not publish its segment id at \(path) in time"
        case .peerGone(let rank): "rank \(rank) is gone (exited or disconnected from the broker)"
        case .tagMismatch(let source, let expected, let found):
            "the next message from rank \(source) has tag \(found), not \(expected) (messages between two ranks arrive in order)"
        case .truncated(let source, let length, let capacity):
            "the next message from rank \(source) has \(length) bytes, more than the \(capacity)-byte receive buffer"
        case .invalidRank(let rank): "rank \(rank) is not a peer of this communicator"
        case .notCommunicatorMemory(let what): "\(what) must be memory from Communicator.allocate"
        case .broker(let error): "broker: \(error)"
        }
    }
}
