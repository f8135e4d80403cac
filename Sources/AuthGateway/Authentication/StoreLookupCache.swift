import Foundation
import Synchronization
import TokenStore

/// Recent token-store lookups (API keys by digest, grant status by id), so most requests skip the store query.
///
/// Entries are valid only while the store's change counter is the one they were read under: any commit (a
/// revocation by `authctl` in another process included) empties the cache before the next lookup. Entries also
/// age out after `ttl` (negative answers sooner), and the cache is emptied when it holds `capacity` entries, so
/// random credentials cannot grow it without bound. Callers still apply time-dependent rules (expiry) per request.
final class StoreLookupCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct State {
        var version: Int = -1
        var entries: [Key: (value: Value, storedAt: ContinuousClock.Instant)] = [:]
    }

    private let state = Mutex(State())
    private let ttl: Duration
    private let negativeTTL: Duration
    private let capacity: Int
    private let isNegative: @Sendable (Value) -> Bool

    init(ttl: Duration, negativeTTL: Duration, capacity: Int, isNegative: @escaping @Sendable (Value) -> Bool) {
        self.ttl = ttl
        self.negativeTTL = negativeTTL
        self.capacity = capacity
        self.isNegative = isNegative
    }

    /// The cached value, or nil when the store must be asked.
    func lookup(_ key: Key, version: Int, now: ContinuousClock.Instant = .now) -> Value? {
        state.withLock { state in
            if state.version != version {
                state.entries.removeAll(keepingCapacity: true)
                state.version = version
                return nil
            }
            guard let entry = state.entries[key] else { return nil }
            guard now - entry.storedAt < (isNegative(entry.value) ? negativeTTL : ttl) else {
                state.entries[key] = nil
                return nil
            }
            return entry.value
        }
    }

    func store(_ value: Value, for key: Key, version: Int, now: ContinuousClock.Instant = .now) {
        state.withLock { state in
            guard state.version == version else { return }
            if state.entries.count >= capacity { state.entries.removeAll(keepingCapacity: true) }
            state.entries[key] = (value, now)
        }
    }

    /// The cached value for `key`, or the store's answer from `load`, cached under the counter read before it.
    func value(for key: Key, store: TokenStore, load: () async throws -> Value) async throws -> Value {
        let version = try store.changeCounter()
        if let cached = lookup(key, version: version) { return cached }
        let loaded = try await load()
        self.store(loaded, for: key, version: version)
        return loaded
    }
}

/// API keys by digest; `nil` records a known-unknown key.
typealias APIKeyCache = StoreLookupCache<Data, APIKey?>

extension StoreLookupCache where Key == Data, Value == APIKey? {
    convenience init(ttl: Duration = .seconds(30), negativeTTL: Duration = .seconds(2), capacity: Int = 100_000) {
        self.init(ttl: ttl, negativeTTL: negativeTTL, capacity: capacity, isNegative: { $0 == nil })
    }
}

/// The status of a built-in authorization server grant, by grant id. A status holds its own end (an API key's
/// expiry), which the caller compares with the clock, since a key expires without any change to the store.
typealias GrantStatusCache = StoreLookupCache<String, GrantStatus>

extension StoreLookupCache where Key == String, Value == GrantStatus {
    convenience init() {
        self.init(ttl: .seconds(30), negativeTTL: .seconds(30), capacity: 100_000, isNegative: { $0 == .inactive })
    }
}
