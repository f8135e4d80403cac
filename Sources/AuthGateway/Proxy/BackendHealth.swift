import Foundation
import Synchronization

/// What the gateway knows about each proxied backend: its circuit breaker, the last health check, and how many
/// requests are in flight against the route's stream limit.
public final class BackendHealth: Sendable {
    struct Entry {
        var backend: PathStyleBackend
        var breaker: CircuitBreaker
        var inFlight = 0
        /// In-flight requests per principal; a principal with none has no entry.
        var perPrincipal: [String: Int] = [:]
        var lastCheck: Date?
        var lastCheckAnswered: Bool?
        var lastError: String?
        var nextCheck: ContinuousClock.Instant
    }

    /// Why a request may not go to the backend now.
    public enum Refusal: Sendable, Equatable {
        case circuitOpen
        case tooManyStreams
        /// This principal already holds `max_streams_per_principal` of the route's slots.
        case tooManyStreamsForPrincipal
    }

    /// A health check to run: the route and the URL to request.
    struct Check: Sendable {
        let route: String
        let url: String
        let idleTimeout: Duration
    }

    private let entries = Mutex<[String: Entry]>([:])

    public init() {}

    /// Follows a policy (re)load: new path-style routes are added, removed ones dropped, and a route whose upstream
    /// or breaker settings changed starts afresh; an unchanged route keeps its breaker and in-flight count.
    public func sync(with policy: Policy, now: ContinuousClock.Instant = .now) {
        entries.withLock { entries in
            var next: [String: Entry] = [:]
            for route in policy.routes {
                guard let backend = route.backend.pathStyle else { continue }
                if var existing = entries[route.name], existing.backend.upstream == backend.upstream, existing.breaker.settings == backend.breaker {
                    existing.backend = backend
                    next[route.name] = existing
                } else {
                    next[route.name] = Entry(backend: backend, breaker: CircuitBreaker(settings: backend.breaker), nextCheck: now)
                }
            }
            entries = next
        }
    }

    /// Admits one request of `principal` (see `principalKey`) to `route`'s backend, or says why not. An admitted
    /// request must be `finished` once, with the same principal.
    public func admit(_ route: String, principal: String? = nil, now: ContinuousClock.Instant = .now) -> Refusal? {
        entries.withLock { entries in
            guard var entry = entries[route] else { return .circuitOpen }
            guard entry.inFlight < entry.backend.maxStreams else { return .tooManyStreams }
            if let principal, entry.perPrincipal[principal, default: 0] >= entry.backend.maxStreamsPerPrincipal { return .tooManyStreamsForPrincipal }
            guard entry.breaker.admit(now: now) else { return .circuitOpen }
            entry.inFlight += 1
            if let principal { entry.perPrincipal[principal, default: 0] += 1 }
            entries[route] = entry
            return nil
        }
    }

    public func finished(_ route: String, principal: String? = nil) {
        entries.withLock { entries in
            guard var entry = entries[route] else { return }
            entry.inFlight = max(0, entry.inFlight - 1)
            if let principal, let count = entry.perPrincipal[principal] { entry.perPrincipal[principal] = count > 1 ? count - 1 : nil }
            entries[route] = entry
        }
    }

    /// Whom a stream slot is counted for: the subject within its issuer (API keys have none). The OAuth client is
    /// left out on purpose: anyone can register more clients.
    public static func principalKey(_ principal: Principal) -> String { principal.issuer + "\u{0}" + principal.subject }

    /// The backend answered (any HTTP response) or failed to (`error`).
    public func record(_ route: String, error: String?, now: ContinuousClock.Instant = .now) {
        entries.withLock { entries in
            guard var entry = entries[route] else { return }
            if let error {
                entry.breaker.recordFailure(now: now)
                entry.lastError = error
            } else {
                entry.breaker.recordSuccess()
            }
            entries[route] = entry
        }
    }

    /// The health checks due now; each is scheduled again one interval later. A check counts as a request for the
    /// breaker: while it is open none runs, and after the cool-down the check is the trial.
    func dueChecks(now: ContinuousClock.Instant = .now) -> [Check] {
        entries.withLock { entries in
            var checks: [Check] = []
            for (route, var entry) in entries where entry.nextCheck <= now {
                entry.nextCheck = now + entry.backend.healthInterval
                if entry.breaker.admit(now: now) {
                    checks.append(Check(route: route, url: entry.backend.upstream + entry.backend.healthPath, idleTimeout: entry.backend.idleTimeout))
                }
                entries[route] = entry
            }
            return checks
        }
    }

    /// Records a health check's outcome.
    func checked(_ route: String, error: String?, now: ContinuousClock.Instant = .now) {
        record(route, error: error, now: now)
        entries.withLock { entries in
            entries[route]?.lastCheck = Date()
            entries[route]?.lastCheckAnswered = error == nil
        }
    }

    /// The breaker state of one route (`closed`, `open`, `half_open`), for tests and logs.
    public func state(of route: String) -> String? {
        entries.withLock { $0[route]?.breaker.stateName }
    }

    /// The `GET /healthz/backends` document and whether every breaker is closed.
    public func report() -> (json: String, healthy: Bool) {
        let (backends, healthy) = entries.withLock { entries -> ([[String: Any]], Bool) in
            var healthy = true
            let backends = entries.keys.sorted().map { route -> [String: Any] in
                let entry = entries[route]!
                var item: [String: Any] = ["route": route, "state": entry.breaker.stateName, "in_flight": entry.inFlight]
                if case .closed(let failures) = entry.breaker.state { item["consecutive_failures"] = failures } else { healthy = false }
                item["answering"] = entry.lastCheckAnswered.map { $0 as Any } ?? NSNull()
                if let lastCheck = entry.lastCheck { item["last_check"] = ISO8601DateFormatter().string(from: lastCheck) }
                if let lastError = entry.lastError { item["last_error"] = lastError }
                return item
            }
            return (backends, healthy)
        }
        let document: [String: Any] = ["status": healthy ? "ok" : "degraded", "backends": backends]
        let data = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])) ?? Data("{}".utf8)
        return (String(decoding: data, as: UTF8.self), healthy)
    }
}
