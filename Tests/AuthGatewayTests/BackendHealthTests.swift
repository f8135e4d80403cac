import AuthGateway
import Foundation
import Testing

@Suite("Backend health and stream limits")
struct BackendHealthTests {
    static func policy(maxStreams: Int = 2, url: String = "http://om:1") throws -> Policy {
        try PolicyLoader.load(yaml: testPolicy(routes: """
              - name: om
                match: { path: /om/** }
                accept: [api_key]
                backend: { style: path, url: "\(url)", path: "/u/{subject}", max_streams: \(maxStreams), failure_threshold: 1, cooldown: 1h }
            """)).policy
    }

    @Test("requests are admitted up to max_streams; a finished one frees its slot")
    func streamLimit() throws {
        let health = BackendHealth()
        health.sync(with: try Self.policy())
        #expect(health.admit("om") == nil)
        #expect(health.admit("om") == nil)
        #expect(health.admit("om") == .tooManyStreams)
        health.finished("om")
        #expect(health.admit("om") == nil)
    }

    @Test("an open circuit refuses before the stream limit is consulted")
    func openCircuit() throws {
        let health = BackendHealth()
        health.sync(with: try Self.policy())
        health.record("om", error: "connection refused")
        #expect(health.state(of: "om") == "open")
        #expect(health.admit("om") == .circuitOpen)
    }

    @Test("a reload keeps the breaker of an unchanged backend and starts afresh when its URL changes")
    func reload() throws {
        let health = BackendHealth()
        health.sync(with: try Self.policy())
        health.record("om", error: "connection refused")
        health.sync(with: try Self.policy())
        #expect(health.state(of: "om") == "open")
        health.sync(with: try Self.policy(url: "http://om:2"))
        #expect(health.state(of: "om") == "closed")
    }

    @Test("a route that is not path-style (or not in the policy) is never admitted")
    func unknownRoute() {
        #expect(BackendHealth().admit("nope") == .circuitOpen)
    }

    @Test("the health report says degraded while a circuit is open")
    func report() throws {
        let health = BackendHealth()
        health.sync(with: try Self.policy())
        #expect(health.report().healthy)
        health.record("om", error: "connection refused")
        let (json, healthy) = health.report()
        #expect(!healthy)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(document["status"] as? String == "degraded")
        #expect(!json.contains("om:1"))
    }
}
