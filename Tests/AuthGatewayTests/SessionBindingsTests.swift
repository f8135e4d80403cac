@testable import AuthGateway
import Testing

@Suite("Session bindings")
struct SessionBindingsTests {
    let start = ContinuousClock.now
    let key = SessionBindings.Key(route: "om", session: "s1")
    static func owner(_ subject: String, client: String = "cli", method: CredentialKind = .apiKey) -> SessionOwner {
        SessionOwner(Principal(subject: subject, method: method, scopes: [], groups: [], client: client, issuer: "", keyID: "k-\(subject)", restrictedToRoute: nil))
    }

    @Test("a session is owned by the principal that opened it, with its message path")
    func owned() {
        let bindings = SessionBindings()
        bindings.bind(key, to: Self.owner("alice"), messagePath: "/mcp/messages/", idleTimeout: .seconds(60), now: start)
        #expect(bindings.lookup(key, for: Self.owner("alice"), now: start) == .owned(messagePath: "/mcp/messages/"))
    }

    @Test("another principal is foreign", arguments: [owner("bob"), owner("alice", client: "other"), owner("alice", method: .jwt)])
    func foreign(_ other: SessionOwner) {
        let bindings = SessionBindings()
        bindings.bind(key, to: Self.owner("alice"), idleTimeout: .seconds(60), now: start)
        #expect(bindings.lookup(key, for: other, now: start) == .foreign)
    }

    @Test("a session id never bound, or bound on another route, is unknown")
    func unknown() {
        let bindings = SessionBindings()
        bindings.bind(key, to: Self.owner("alice"), idleTimeout: .seconds(60), now: start)
        #expect(bindings.lookup(.init(route: "om", session: "s2"), for: Self.owner("alice"), now: start) == .unknown)
        #expect(bindings.lookup(.init(route: "notes", session: "s1"), for: Self.owner("alice"), now: start) == .unknown)
    }

    @Test("another principal cannot take over a live binding")
    func noTakeover() {
        let bindings = SessionBindings()
        bindings.bind(key, to: Self.owner("alice"), idleTimeout: .seconds(60), now: start)
        #expect(!bindings.bind(key, to: Self.owner("bob"), idleTimeout: .seconds(60), now: start))
        #expect(bindings.lookup(key, for: Self.owner("alice"), now: start) == .owned(messagePath: nil))
    }

    @Test("an unused binding without open streams expires after its idle timeout")
    func idleExpiry() {
        let bindings = SessionBindings()
        bindings.bind(key, to: Self.owner("alice"), idleTimeout: .seconds(60), now: start)
        #expect(bindings.lookup(key, for: Self.owner("alice"), now: start + .seconds(59)) != .unknown)
        #expect(bindings.lookup(key, for: Self.owner("alice"), now: start + .seconds(59 + 60)) == .unknown)
    }

    @Test("use keeps a binding alive")
    func useExtends() {
        let bindings = SessionBindings()
        bindings.bind(key, to: Self.owner("alice"), idleTimeout: .seconds(60), now: start)
        for minute in 1...5 { _ = bindings.lookup(key, for: Self.owner("alice"), now: start + .seconds(50 * minute)) }
        #expect(bindings.lookup(key, for: Self.owner("alice"), now: start + .seconds(290)) != .unknown)
    }

    @Test("an open stream keeps a binding alive however long it is idle, until it closes")
    func openStreamKeepsAlive() {
        let bindings = SessionBindings()
        bindings.bind(key, to: Self.owner("alice"), openStreams: 1, idleTimeout: .seconds(60), now: start)
        #expect(bindings.removeExpired(now: start + .seconds(3600)) == 0)
        bindings.streamClosed(key, now: start + .seconds(3600))
        #expect(bindings.removeExpired(now: start + .seconds(3661)) == 1)
        #expect(bindings.count == 0)
    }

    @Test("removing ends a session at once (stream closed, DELETE)")
    func removal() {
        let bindings = SessionBindings()
        bindings.bind(key, to: Self.owner("alice"), openStreams: 1, idleTimeout: .seconds(60), now: start)
        bindings.remove(key)
        #expect(bindings.lookup(key, for: Self.owner("alice"), now: start) == .unknown)
    }

    @Test("a policy reload drops the bindings of routes that are gone")
    func reloadDropsRoutes() {
        let bindings = SessionBindings()
        bindings.bind(key, to: Self.owner("alice"), idleTimeout: .seconds(60), now: start)
        bindings.bind(.init(route: "notes", session: "n1"), to: Self.owner("alice"), idleTimeout: .seconds(60), now: start)
        bindings.removeRoutes(notIn: ["notes"])
        #expect(bindings.count == 1)
    }
}
