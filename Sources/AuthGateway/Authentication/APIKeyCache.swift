import Foundation
import Synchronization
import TokenStore

/// Recently looked-up API keys by digest, so most requests skip the store query.
///
/// Entries are valid only while the store's change counter is the one they were read under: any commit (a
/// revocation by `authctl` in another process included) empties the cache before the next lookup. Entries also
/// age out after `ttl` (unknown keys sooner), and the cache is emptied when it holds `capacity` entries, so random
/// keys cannot grow it without bound. Expiry and route rules are applied to the record on every request.
final class APIKeyCache: Sendable {
    private struct State {
        var version: Int = -1
        var entries: [Data: (key: APIKey?, storedAt: ContinuousClock.Instant)] = [:]
    }

    private let state = Mutex(State())
    private let ttl: Duration
    private let negativeTTL: Duration
    private let capacity: Int

    init(ttl: Duration = .seconds(30), negativeTTL: Duration = .seconds(2), capacity: Int = 100_000) {
        self.ttl = ttl
        self.negativeTTL = negativeTTL
        self.capacity = capacity
    }

    /// The cached lookup result (`.some(nil)` for a known-unknown key), or nil when the store must be asked.
    func lookup(_ digest: Data, version: Int, now: ContinuousClock.Instant = .now) -> APIKey?? {
        state.withLock { state in
            if state.version != version {
                state.entries.removeAll(keepingCapacity: true)
                state.version = version
                return nil
            }
            guard let entry = state.entries[digest] else { return nil }
            guard now - entry.storedAt < (entry.key == nil ? negativeTTL : ttl) else {
                state.entries[digest] = nil
                return nil
            }
            return .some(entry.key)
        }
    }

    func store(_ key: APIKey?, for digest: Data, version: Int, now: ContinuousClock.Instant = .now) {
        state.withLock { state in
            guard state.version == version else { return }
            if state.entries.count >= capacity { state.entries.removeAll(keepingCapacity: true) }
            state.entries[digest] = (key, now)
        }
    }
}
