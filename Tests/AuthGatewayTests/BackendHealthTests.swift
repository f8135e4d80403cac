import AsyncHTTPClient
import AuthGateway
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
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

    @Test("finding G: one principal gets at most max_streams_per_principal slots; others still get theirs")
    func perPrincipalLimit() throws {
        let health = BackendHealth()
        health.sync(with: try PolicyLoader.load(yaml: testPolicy(routes: """
              - name: om
                match: { path: /om/** }
                accept: [api_key]
                backend: { style: path, url: "http://om:1", path: "/u/{subject}", max_streams: 4, max_streams_per_principal: 2 }
            """)).policy)
        #expect(health.admit("om", principal: "alice") == nil)
        #expect(health.admit("om", principal: "alice") == nil)
        #expect(health.admit("om", principal: "alice") == .tooManyStreamsForPrincipal)
        #expect(health.admit("om", principal: "bob") == nil)
        health.finished("om", principal: "alice")
        #expect(health.admit("om", principal: "alice") == nil)
        #expect(health.admit("om", principal: "carol") == nil)
        #expect(health.admit("om", principal: "carol") == .tooManyStreams)
    }

    @Test("finding G: max_streams_per_principal defaults below max_streams and may not exceed it")
    func perPrincipalSetting() throws {
        let backend = try Self.policy(maxStreams: 100).routes[0].backend.pathStyle
        #expect(backend?.maxStreamsPerPrincipal == PathStyleBackend.defaultMaxStreamsPerPrincipal)
        #expect(try Self.policy(maxStreams: 2).routes[0].backend.pathStyle?.maxStreamsPerPrincipal == 2)
        #expect(throws: (any Error).self) {
            try PolicyLoader.load(yaml: testPolicy(routes: """
                  - name: om
                    match: { path: /om/** }
                    accept: [api_key]
                    backend: { style: path, url: "http://om:1", path: "/u/{subject}", max_streams: 4, max_streams_per_principal: 5 }
                """))
        }
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

/// Finding G through the proxy: a principal at its stream cap gets 429, another principal still gets through, and
/// a finished request frees the slot.
@Suite("Finding G: per-principal stream cap through the proxy")
struct PerPrincipalStreamCapTests {
    @Test("finding G: a second concurrent stream of one principal is 429 while another principal's passes")
    func secondStreamRefused() async throws {
        let hits = ProxyEndpointTests.HitCounter()
        let router = Router()
        router.get("/u/**") { request, _ -> Response in
            hits.add()
            if request.uri.path.hasSuffix("/alice") { try await Task.sleep(for: .milliseconds(1500)) }
            return Response(status: .ok, body: .init(byteBuffer: .init(string: "ok")))
        }
        let backend = try await LoopbackServer(router: router)
        let fixture = try GatewayFixture(policy: testPolicy(routes: """
              - name: om
                match: { path: /om/** }
                accept: [api_key]
                backend: { style: path, url: "\(backend.baseURL)", path: "/u/{subject}", max_streams: 10, max_streams_per_principal: 1 }
            """))
        let (alice, _) = try fixture.issueKey(subject: "alice", scopes: [])
        let (bob, _) = try fixture.issueKey(subject: "bob", scopes: [])
        try await fixture.withLiveServer { client in
            // The first stream on a connection of its own (the test client has one connection, one request at a time).
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(client.port ?? 0)/om")
            request.headers.add(name: "Authorization", value: "Bearer \(alice)")
            async let first = HTTPClient.shared.execute(request, timeout: .seconds(10)).status.code
            while hits.value == 0 { try await Task.sleep(for: .milliseconds(20)) }
            try await client.execute(uri: "/om", method: .get, headers: [.authorization: "Bearer \(alice)"]) { response in
                #expect(response.status == .tooManyRequests)
                #expect(response.header("Retry-After") != nil)
            }
            try await client.execute(uri: "/om", method: .get, headers: [.authorization: "Bearer \(bob)"]) { response in
                #expect(response.status == .ok)
            }
            #expect(try await first == 200)
            try await client.execute(uri: "/om", method: .get, headers: [.authorization: "Bearer \(alice)"]) { response in
                #expect(response.status == .ok, "the finished stream freed its slot")
            }
        }
        await backend.stop()
    }
}
