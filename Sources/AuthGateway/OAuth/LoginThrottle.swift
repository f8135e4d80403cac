import Foundation
import Synchronization

/// Slows password guessing on the login page: after `limit` failed sign-ins for one user name within `window`,
/// that name is refused for `window` (as Authelia's regulation does). Unknown names are counted the same way,
/// so the lockout says nothing about which users exist.
final class LoginThrottle: Sendable {
    private struct Failures {
        var count = 0
        var since: ContinuousClock.Instant
    }

    private let failures = Mutex<[String: Failures]>([:])
    private let limit: Int
    private let window: Duration
    /// Bounds memory when many names are tried: the table is emptied (forgetting old failures) when full.
    private let capacity = 10_000

    init(limit: Int = 5, window: Duration = .seconds(300)) {
        self.limit = limit
        self.window = window
    }

    func isLocked(_ username: String, now: ContinuousClock.Instant = .now) -> Bool {
        failures.withLock { table in
            guard let entry = table[username.lowercased()] else { return false }
            if now - entry.since >= window {
                table[username.lowercased()] = nil
                return false
            }
            return entry.count >= limit
        }
    }

    func recordFailure(_ username: String, now: ContinuousClock.Instant = .now) {
        failures.withLock { table in
            if table.count >= capacity { table.removeAll(keepingCapacity: true) }
            let key = username.lowercased()
            var entry = table[key].flatMap { now - $0.since < window ? $0 : nil } ?? Failures(since: now)
            entry.count += 1
            table[key] = entry
        }
    }

    func recordSuccess(_ username: String) {
        failures.withLock { table in table[username.lowercased()] = nil }
    }
}
