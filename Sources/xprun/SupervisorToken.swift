/// What one of `RankSupervisor`'s epoll registrations stands for: the signal inbox (user data 0) or
/// output stream `i` (user data `i + 1`).
enum SupervisorToken: RawRepresentable, Sendable {
    case signals
    case stream(Int)

    var rawValue: UInt64 {
        switch self {
        case .signals: 0
        case .stream(let index): UInt64(index) + 1
        }
    }

    init(rawValue: UInt64) { self = rawValue == 0 ? .signals : .stream(Int(rawValue - 1)) }
}
