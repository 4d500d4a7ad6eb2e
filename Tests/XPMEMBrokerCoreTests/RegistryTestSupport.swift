import Synchronization
import Testing
import XPMEMBrokerCore
import XPMEMWire

let page: UInt64 = 4096

/// A random source that replays `script`, then counts up from `fallbackStart`, so tests decide exactly
/// which ids the registry is offered, duplicates and zero included.
final class ScriptedRandomSource: Sendable {
    private struct State {
        var script: [UInt64]
        var next: UInt64
        var draws = 0
    }

    private let state: Mutex<State>

    init(_ script: [UInt64], fallbackStart: UInt64 = 1_000_000) {
        state = Mutex(State(script: script, next: fallbackStart))
    }

    /// How many values the registry has asked for.
    var draws: Int { state.withLock { $0.draws } }

    func next() -> UInt64 {
        state.withLock { state in
            state.draws += 1
            if !state.script.isEmpty { return state.script.removeFirst() }
            defer { state.next += 1 }
            return state.next
        }
    }

    var function: @Sendable () -> UInt64 { { self.next() } }
}

func makeRegistry(limits: RegistryLimits = RegistryLimits(), ids: [UInt64] = []) -> Registry {
    Registry(limits: limits, randomSource: ScriptedRandomSource(ids).function)
}

/// The people in these tests. The owner's group is 1000.
enum People {
    static let owner = Credentials(pid: 100, uid: 1000, gid: 1000)
    /// Another process of the owner's user.
    static let ownerElsewhere = Credentials(pid: 101, uid: 1000, gid: 1000)
    static let groupMember = Credentials(pid: 200, uid: 2000, gid: 1000)
    static let supplementaryMember = Credentials(pid: 300, uid: 3000, gid: 3000, supplementaryGroups: [50, 1000])
    static let stranger = Credentials(pid: 400, uid: 4000, gid: 4000, supplementaryGroups: [50])
    static let superuser = Credentials(pid: 1, uid: 0, gid: 0)
}

/// Runs `body`, which must be refused with `code`; returns the refusal for further checks.
@discardableResult
func expectRefusal<T>(
    _ code: ErrorCode, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws(BrokerError) -> T
) -> BrokerError? {
    do {
        let value = try body()
        Issue.record("expected refusal \(code), got \(value)", sourceLocation: sourceLocation)
        return nil
    } catch {
        #expect(error.code == code, comment, sourceLocation: sourceLocation)
        return error
    }
}
