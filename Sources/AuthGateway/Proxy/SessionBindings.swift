import Synchronization

/// Who opened an MCP session: a request for the session must come from the same principal.
///
/// The key id is left out on purpose, so that rotating a key (same subject, same client name) keeps a session.
public struct SessionOwner: Sendable, Hashable {
    public var subject: String
    public var method: CredentialKind
    public var issuer: String
    public var client: String

    public init(_ principal: Principal) {
        subject = principal.subject
        method = principal.method
        issuer = principal.issuer
        client = principal.client
    }

    /// Exact bytes, not Swift's Unicode-equivalent `==`: "é" and "e\u{301}" are two different subjects.
    public static func == (lhs: SessionOwner, rhs: SessionOwner) -> Bool {
        lhs.method == rhs.method && Authorizer.same(lhs.subject, rhs.subject) && Authorizer.same(lhs.issuer, rhs.issuer)
            && Authorizer.same(lhs.client, rhs.client)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(method)
        for text in [subject, issuer, client] {
            hasher.combine(text.utf8.count)
            for byte in text.utf8 { hasher.combine(byte) }
        }
    }
}

/// The table of MCP session ids (SSE `session_id`, Streamable HTTP `Mcp-Session-Id`) bound to the principal that
/// opened them, per route.
///
/// A session id is a bearer capability at the backend; the gateway only forwards a request naming one when its
/// own principal opened it. Bindings end with their session: the SSE stream closes, the client sends DELETE, or
/// the session stays unused (and has no open stream) for its idle timeout.
public final class SessionBindings: Sendable {
    /// A route's session.
    public struct Key: Sendable, Hashable {
        public var route: String
        public var session: String

        public init(route: String, session: String) {
            self.route = route
            self.session = session
        }
    }

    struct Binding {
        let owner: SessionOwner
        /// For SSE sessions: the upstream path the backend announced for message POSTs.
        let messagePath: String?
        let idleTimeout: Duration
        var openStreams: Int
        var lastUsed: ContinuousClock.Instant
    }

    /// What the table says about a session named in a request.
    public enum Lookup: Sendable, Equatable {
        /// Never bound here, or already ended: the request is not forwarded.
        case unknown
        /// Bound to another principal.
        case foreign
        /// Bound to this principal; SSE sessions carry their upstream message path.
        case owned(messagePath: String?)
    }

    private let table = Mutex<[Key: Binding]>([:])

    public init() {}

    /// Binds `key` to `owner`. False when it is already bound to someone else (the binding is left unchanged).
    @discardableResult
    public func bind(
        _ key: Key, to owner: SessionOwner, messagePath: String? = nil, openStreams: Int = 0, idleTimeout: Duration,
        now: ContinuousClock.Instant = .now
    ) -> Bool {
        table.withLock { table in
            if let existing = table[key], existing.owner != owner, !Self.isExpired(existing, now: now) { return false }
            table[key] = Binding(owner: owner, messagePath: messagePath, idleTimeout: idleTimeout, openStreams: openStreams, lastUsed: now)
            return true
        }
    }

    /// Looks a session up for `owner`, marking it used when it is theirs. An expired binding is removed and unknown.
    public func lookup(_ key: Key, for owner: SessionOwner, now: ContinuousClock.Instant = .now) -> Lookup {
        table.withLock { table in
            guard var binding = table[key] else { return .unknown }
            if Self.isExpired(binding, now: now) {
                table[key] = nil
                return .unknown
            }
            guard binding.owner == owner else { return .foreign }
            binding.lastUsed = now
            table[key] = binding
            return .owned(messagePath: binding.messagePath)
        }
    }

    /// A stream for the session opened (it keeps the binding alive) or closed.
    public func streamOpened(_ key: Key, now: ContinuousClock.Instant = .now) { adjustStreams(key, by: 1, now: now) }
    public func streamClosed(_ key: Key, now: ContinuousClock.Instant = .now) { adjustStreams(key, by: -1, now: now) }

    private func adjustStreams(_ key: Key, by delta: Int, now: ContinuousClock.Instant) {
        table.withLock { table in
            guard var binding = table[key] else { return }
            binding.openStreams = max(0, binding.openStreams + delta)
            binding.lastUsed = now
            table[key] = binding
        }
    }

    /// Ends a session (its SSE stream closed, or DELETE succeeded).
    public func remove(_ key: Key) {
        _ = table.withLock { $0.removeValue(forKey: key) }
    }

    /// Removes every expired binding; returns how many went.
    @discardableResult
    public func removeExpired(now: ContinuousClock.Instant = .now) -> Int {
        table.withLock { table in
            let expired = table.filter { Self.isExpired($0.value, now: now) }.map(\.key)
            for key in expired { table[key] = nil }
            return expired.count
        }
    }

    /// Removes the bindings of routes that no longer exist (after a policy reload).
    public func removeRoutes(notIn routes: Set<String>) {
        table.withLock { table in table = table.filter { routes.contains($0.key.route) } }
    }

    public var count: Int { table.withLock { $0.count } }

    private static func isExpired(_ binding: Binding, now: ContinuousClock.Instant) -> Bool {
        binding.openStreams == 0 && now - binding.lastUsed >= binding.idleTimeout
    }
}
