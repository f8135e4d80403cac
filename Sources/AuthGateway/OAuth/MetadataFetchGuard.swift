import Synchronization

/// Bounds the work unauthenticated `/authorize` requests can cause through Client ID Metadata Documents: a URL whose
/// fetch failed is not fetched again for `failureTTL` (at most `capacity` URLs remembered), and at most
/// `maximumInFlight` fetches run at once; one more is refused instead of queued.
final class MetadataFetchGuard: Sendable {
    private struct State {
        var failures: [String: ContinuousClock.Instant] = [:]
        var inFlight = 0
    }

    let failureTTL: Duration
    let capacity: Int
    let maximumInFlight: Int
    private let state = Mutex(State())

    init(failureTTL: Duration = .seconds(60), capacity: Int = 1024, maximumInFlight: Int = 8) {
        self.failureTTL = failureTTL
        self.capacity = capacity
        self.maximumInFlight = maximumInFlight
    }

    /// Whether `url` failed within the last `failureTTL`.
    func recentlyFailed(_ url: String, now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { state in
            guard let failed = state.failures[url] else { return false }
            if now - failed < failureTTL { return true }
            state.failures[url] = nil
            return false
        }
    }

    func recordFailure(_ url: String, now: ContinuousClock.Instant = .now) {
        state.withLock { state in
            if state.failures.count >= capacity {
                state.failures = state.failures.filter { now - $0.value < failureTTL }
                // Still full of fresh failures: forget them all rather than grow (a refetch costs one bounded fetch).
                if state.failures.count >= capacity { state.failures.removeAll(keepingCapacity: true) }
            }
            state.failures[url] = now
        }
    }

    /// Takes a fetch slot; false when `maximumInFlight` fetches are running.
    func begin() -> Bool {
        state.withLock { state in
            guard state.inFlight < maximumInFlight else { return false }
            state.inFlight += 1
            return true
        }
    }

    func end() {
        state.withLock { $0.inFlight -= 1 }
    }

    var remembered: Int { state.withLock { $0.failures.count } }
}
