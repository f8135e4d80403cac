import Synchronization

/// Everything one proxied request holds until it ends: its slot in the route's stream limit and the session
/// bindings that live exactly as long as its stream.
///
/// Released once, by the end of the response body or, if the body is never written (the client vanished before
/// the head went out), when the response is dropped.
final class ProxyLease: Sendable {
    private struct State {
        var released = false
        /// SSE sessions announced on this stream: they end with it.
        var ownedSessions: [SessionBindings.Key] = []
        /// A Streamable HTTP session whose GET stream this is: it stays bound, but no longer kept alive by it.
        var streamOf: SessionBindings.Key?
    }

    private let route: String
    private let principal: String?
    private let health: BackendHealth
    private let bindings: SessionBindings
    private let state = Mutex(State())

    init(route: String, principal: String? = nil, health: BackendHealth, bindings: SessionBindings) {
        self.route = route
        self.principal = principal
        self.health = health
        self.bindings = bindings
    }

    /// A session announced on this stream, removed when the stream ends. False when the lease already ended.
    func own(_ key: SessionBindings.Key) -> Bool {
        state.withLock { state in
            guard !state.released else { return false }
            state.ownedSessions.append(key)
            return true
        }
    }

    /// Marks this request as a stream of an existing session.
    func keepAlive(_ key: SessionBindings.Key) {
        bindings.streamOpened(key)
        state.withLock { $0.streamOf = key }
    }

    func release() {
        let ended = state.withLock { state -> State? in
            guard !state.released else { return nil }
            let ended = state
            state.released = true
            return ended
        }
        guard let ended else { return }
        for key in ended.ownedSessions { bindings.remove(key) }
        if let key = ended.streamOf { bindings.streamClosed(key) }
        health.finished(route, principal: principal)
    }

    deinit { release() }
}
