@testable import AuthGateway
import Foundation
import Hummingbird
import Testing
import TokenStore

/// Issue 12 item 7: failed credentials from one client address (the trusted `X-Forwarded-For`) beyond
/// `gateway.failed_credentials` are answered 429 with `Retry-After`, on both decision paths; valid credentials and
/// requests without one are never touched, and the 429 says nothing about the credential.
@Suite("Failed-credential throttle")
struct FailedCredentialThrottleTests {
    /// Which of the gateway's two HTTP paths answers `/auth`.
    enum DecisionPath: String, CaseIterable, CustomTestStringConvertible {
        /// `FastAuthHandler`, ahead of Hummingbird.
        case fast
        /// Hummingbird's router: a decision request queued behind another endpoint's request goes there.
        case router

        var testDescription: String { rawValue }
    }

    static let jwksPath = "/jwks.json"
    static let corpIssuer = "https://sso.example.com/realms/mcp"
    static let issuer = try! TestIssuer()

    /// Three failures an hour: nothing refills while a test runs.
    static func policy(limit: String? = "3/h", jwksURL: String = "http://127.0.0.1:9/jwks.json") -> String {
        """
        gateway:
          public_url: https://mcp.example.com
          trusted_proxies: [127.0.0.1/32]
        \(limit.map { "  failed_credentials: \($0)" } ?? "")
        issuers:
          corp:
            issuer: \(corpIssuer)
            jwks_url: \(jwksURL)
            algorithms: [ES256]
            jwks_min_refresh_interval: 0s
        routes:
          - name: ffmpeg
            match: { host: mcp.example.com, path: "/ffmpeg/**" }
            accept: [api_key, jwt]
            require: { scopes: [ffmpeg] }
          - name: internal
            match: { host: mcp.example.com, path: "/internal/{client_name}/sse/{user_id}" }
            accept: [path_context]
            path_context: { networks: [198.51.100.0/24], subject: user_id, client: client_name }
        """
    }

    /// One decision request as Traefik sends it, over `path`; the answer.
    static func decide(
        _ port: Int, via path: DecisionPath, client: String = "198.51.100.7", uri: String = "/ffmpeg/x", credential: String?
    ) async throws -> RawHTTPConnection.Answer {
        var lines = [
            "GET /auth HTTP/1.1", "Host: gateway", "X-Forwarded-Method: GET", "X-Forwarded-Proto: https",
            "X-Forwarded-Host: mcp.example.com", "X-Forwarded-Uri: \(uri)", "X-Forwarded-For: \(client)",
        ]
        if let credential { lines.append("Authorization: Bearer \(credential)") }
        let request = lines.joined(separator: "\r\n") + "\r\n\r\n"
        let connection = try RawHTTPConnection(port: port)
        switch path {
        case .fast:
            await connection.send(request)
        case .router:
            await connection.send("GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n" + request)
            #expect(await connection.readAnswer()?.status == 200)
        }
        return try #require(await connection.readAnswer())
    }

    /// The answer minus its `Date`.
    static func comparable(_ answer: RawHTTPConnection.Answer) -> String {
        let headers = answer.headers.filter { $0.name.lowercased() != "date" }.map { "\($0.name): \($0.value)" }
        return "\(answer.statusLine)\n\(headers.joined(separator: "\n"))\n\n\(answer.body)"
    }

    static let unknownKey = "agk_" + String(repeating: "ab", count: 32)

    @Test("after failed_credentials failures from one address the next failure is 429 with Retry-After and no challenge", arguments: DecisionPath.allCases)
    func throttledAfterLimit(path: DecisionPath) async throws {
        let fixture = try GatewayFixture(policy: Self.policy())
        try await fixture.withGatewayServer { (port: Int) async throws in
            for _ in 0..<3 {
                let failed = try await Self.decide(port, via: path, credential: Self.unknownKey)
                #expect(failed.status == 401)
                #expect(failed.header("WWW-Authenticate")?.contains(#"error="invalid_token""#) == true)
            }
            let throttled = try await Self.decide(port, via: path, credential: Self.unknownKey)
            #expect(throttled.status == 429)
            #expect((Int(throttled.header("Retry-After") ?? "") ?? 0) >= 1000, "3/h refills one failure in 1200 s")
            #expect(throttled.header("WWW-Authenticate") == nil)
            #expect(throttled.header("Cache-Control") == "no-store")
            #expect(throttled.body.contains(#""error":"too_many_requests""#))
        }
    }

    @Test("a valid key from a throttled address is allowed, and does not end the throttle", arguments: DecisionPath.allCases)
    func validKeyFromThrottledAddress(path: DecisionPath) async throws {
        let fixture = try GatewayFixture(policy: Self.policy())
        let key = try fixture.issueKey(subject: "alice", scopes: ["ffmpeg"]).key
        try await fixture.withGatewayServer { (port: Int) async throws in
            for _ in 0..<4 { _ = try await Self.decide(port, via: path, credential: Self.unknownKey) }
            #expect(try await Self.decide(port, via: path, credential: Self.unknownKey).status == 429)
            for _ in 0..<5 {
                let allowed = try await Self.decide(port, via: path, credential: key)
                #expect(allowed.status == 200)
                #expect(allowed.header("X-Auth-Subject") == "alice")
            }
            #expect(try await Self.decide(port, via: path, credential: Self.unknownKey).status == 429)
        }
    }

    @Test("requests without a credential never count and are never throttled", arguments: DecisionPath.allCases)
    func missingCredentialNeverCounts(path: DecisionPath) async throws {
        let fixture = try GatewayFixture(policy: Self.policy())
        try await fixture.withGatewayServer { (port: Int) async throws in
            for _ in 0..<10 {
                let challenge = try await Self.decide(port, via: path, credential: nil)
                #expect(challenge.status == 401)
                #expect(challenge.header("WWW-Authenticate")?.contains("resource_metadata=") == true)
            }
            for _ in 0..<3 { #expect(try await Self.decide(port, via: path, credential: Self.unknownKey).status == 401) }
            #expect(try await Self.decide(port, via: path, credential: Self.unknownKey).status == 429)
            // Throttled, the discovery challenge MCP clients start OAuth from is still there.
            let challenge = try await Self.decide(port, via: path, credential: nil)
            #expect(challenge.status == 401)
            #expect(challenge.header("WWW-Authenticate")?.contains("resource_metadata=") == true)
        }
    }

    @Test("unknown, revoked and expired keys count alike, and once throttled all three get the same 429")
    func keysCountAlikeAndLookAlike() async throws {
        let fixture = try GatewayFixture(policy: Self.policy())
        let revoked = try fixture.issueKey(subject: "alice", name: "revoked", scopes: ["ffmpeg"])
        _ = try fixture.store.revokeKey(id: revoked.id)
        let expired = try fixture.issueKey(subject: "bob", name: "expired", scopes: ["ffmpeg"], expiresAt: Date().addingTimeInterval(-60)).key
        try await fixture.withGatewayServer { (port: Int) async throws in
            let keys = [Self.unknownKey, revoked.key, expired]
            var failures: [String] = []
            for key in keys { failures.append(Self.comparable(try await Self.decide(port, via: .fast, credential: key))) }
            #expect(failures.allSatisfy { $0.hasPrefix("HTTP/1.1 401") })
            #expect(Set(failures).count == 1, "one 401 for unknown, revoked and expired keys")
            var throttled: [RawHTTPConnection.Answer] = []
            for key in keys { throttled.append(try await Self.decide(port, via: .fast, credential: key)) }
            #expect(throttled.allSatisfy { $0.status == 429 })
            // Retry-After counts down with the clock; everything else is byte for byte the same.
            let shapes = throttled.map { Self.comparable($0).replacingOccurrences(of: #"Retry-After: \d+"#, with: "Retry-After: n", options: .regularExpression) }
            #expect(Set(shapes).count == 1, "\(shapes)")
        }
    }

    @Test("another address keeps its own budget; addresses in one IPv6 /64 share one")
    func budgetsPerAddress() async throws {
        let fixture = try GatewayFixture(policy: Self.policy())
        try await fixture.withGatewayServer { (port: Int) async throws in
            for _ in 0..<3 { _ = try await Self.decide(port, via: .fast, client: "198.51.100.7", credential: Self.unknownKey) }
            #expect(try await Self.decide(port, via: .fast, client: "198.51.100.7", credential: Self.unknownKey).status == 429)
            #expect(try await Self.decide(port, via: .fast, client: "198.51.100.8", credential: Self.unknownKey).status == 401)
            for suffix in ["1", "2", "3"] {
                #expect(try await Self.decide(port, via: .fast, client: "2001:db8:1:2::\(suffix)", credential: Self.unknownKey).status == 401)
            }
            #expect(try await Self.decide(port, via: .fast, client: "2001:db8:1:2:ffff::9", credential: Self.unknownKey).status == 429)
            #expect(try await Self.decide(port, via: .fast, client: "2001:db8:1:3::1", credential: Self.unknownKey).status == 401)
        }
    }

    @Test("forged JWTs count; a genuine JWT that expired or names another resource does not, and gets 401 even when throttled", arguments: DecisionPath.allCases)
    func jwtFailures(path: DecisionPath) async throws {
        let issuer = Self.issuer
        let endpoint = JWKSEndpoint()
        endpoint.serve(issuer.jwks([issuer.ecJWK]))
        let router = Router<BasicRequestContext>()
        endpoint.register(on: router, path: Self.jwksPath)
        let server = try await LoopbackServer(router: router)
        defer { Task { await server.stop() } }
        let fixture = try GatewayFixture(policy: Self.policy(jwksURL: server.baseURL + Self.jwksPath))
        let now = Int(Date().timeIntervalSince1970)
        let expired = try issuer.es256(issuer.claims(["iat": now - 900, "nbf": now - 900, "exp": now - 600]))
        let otherResource = try issuer.es256(issuer.claims(audience: "https://mcp.example.com/elsewhere"))
        let valid = try issuer.es256(issuer.claims())
        let forger = try TestIssuer(ecKid: issuer.ecKid)
        try await fixture.withGatewayServer { (port: Int) async throws in
            // Many genuine-but-refused tokens: none of them counts.
            for token in Array(repeating: expired, count: 5) + Array(repeating: otherResource, count: 5) {
                #expect(try await Self.decide(port, via: path, credential: token).status == 401)
            }
            for _ in 0..<3 {
                let forged = try forger.es256(forger.claims())
                #expect(try await Self.decide(port, via: path, credential: forged).status == 401)
            }
            #expect(try await Self.decide(port, via: path, credential: try forger.es256(forger.claims())).status == 429)
            // Throttled: a client holding a genuine expired token is still told to refresh, a valid one passes.
            let stale = try await Self.decide(port, via: path, credential: expired)
            #expect(stale.status == 401)
            #expect(stale.header("WWW-Authenticate")?.contains(#"error="invalid_token""#) == true)
            #expect(try await Self.decide(port, via: path, credential: valid).status == 200)
        }
    }

    @Test("an unsafe identity in a path_context capture counts as a failed credential")
    func pathContextIdentity() async throws {
        let fixture = try GatewayFixture(policy: Self.policy())
        try await fixture.withGatewayServer { (port: Int) async throws in
            #expect(try await Self.decide(port, via: .fast, uri: "/internal/claude/sse/bob", credential: nil).status == 200)
            for _ in 0..<3 {
                #expect(try await Self.decide(port, via: .fast, uri: "/internal/claude/sse/%20bob", credential: nil).status == 400)
            }
            #expect(try await Self.decide(port, via: .fast, uri: "/internal/claude/sse/%20bob", credential: nil).status == 429)
            #expect(try await Self.decide(port, via: .fast, uri: "/internal/claude/sse/bob", credential: nil).status == 200)
        }
    }

    @Test("failed_credentials is N/s, N/min or N/h, or off; 30/min when unset; anything else is refused at load")
    func policySetting() throws {
        let load = { (limit: String?) in try PolicyLoader.load(yaml: Self.policy(limit: limit), file: "p.yaml", environment: [:]).policy }
        #expect(try load(nil).gateway.failedCredentials == RateLimit(count: 30, period: 60))
        #expect(try load("5/min").gateway.failedCredentials == RateLimit(count: 5, period: 60))
        #expect(try load("100/h").gateway.failedCredentials == RateLimit(count: 100, period: 3600))
        #expect(try load("off").gateway.failedCredentials == nil)
        for bad in ["lots", "0/min", "5/day", "5"] {
            #expect(throws: (any Error).self, "\(bad)") { try load(bad) }
        }
    }

    @Test("with failed_credentials off nothing is throttled")
    func off() async throws {
        let fixture = try GatewayFixture(policy: Self.policy(limit: "off"))
        try await fixture.withGatewayServer { (port: Int) async throws in
            for _ in 0..<10 { #expect(try await Self.decide(port, via: .fast, credential: Self.unknownKey).status == 401) }
        }
    }

    @Test("a flood of failures from fresh addresses never grows the table beyond the limiter's capacity, and a throttled address stays throttled")
    func boundedMemory() {
        let limiter = SourceRateLimiter(capacity: 100)
        let throttle = FailedCredentialThrottle(limit: RateLimit(count: 3, period: 3600), limiter: limiter)
        let failure = Denial(kind: .invalidCredential, route: nil, reason: "unknown API key", failedCredential: true)
        func status(_ client: String) -> Int {
            guard case .deny(let denial) = throttle.admit(failure, from: IPAddress(client)) else { return 200 }
            return DenialResponse(denial, gateway: GatewaySettings(publicURL: "https://mcp.example.com", realm: "mcp", trustedProxies: [], identityHeaders: .init(), apiKeyHeader: nil)).status
        }
        for _ in 0..<3 { #expect(status("192.0.2.1") == 401) }
        #expect(status("192.0.2.1") == 429)
        for index in 0..<5_000 { _ = status("2001:db8:\(index / 256):\(index % 256)::1") }
        #expect(limiter.count <= 100 + 1, "the capacity, and one overflow bucket")
        #expect(status("192.0.2.1") == 429, "the flood did not reset the throttled address")
    }
}
