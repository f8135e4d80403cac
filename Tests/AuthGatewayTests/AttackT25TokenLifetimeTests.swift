@testable import AuthGateway
import Foundation
import Hummingbird
import Testing
import TokenStore

/// T25 (Kong #7493 and `maximum_expiration`; lua-resty-jwt #50; nginx-auth-jwt #18): a JWT whose validity window
/// is missing, over, not begun, or far longer than the issuer's `max_token_lifetime` is refused with 401
/// `invalid_token`, on the fast decision path and through the router alike, and the built-in issuer never signs a
/// token its own check would refuse.
@Suite("T25: token lifetime")
struct AttackT25TokenLifetimeTests {
    static let issuer = try! TestIssuer()
    static let day = 86400

    /// A claims set built when the case runs (so `now` is the test's now), and whether the gateway accepts it.
    struct LifetimeCase: Sendable, CustomTestStringConvertible {
        let testDescription: String
        let accepted: Bool
        let overrides: @Sendable (_ now: Int) -> [String: Any?]

        init(_ name: String, accepted: Bool, _ overrides: @escaping @Sendable (_ now: Int) -> [String: Any?]) {
            self.testDescription = name
            self.accepted = accepted
            self.overrides = overrides
        }
    }

    /// The default issuer: `max_token_lifetime` 24h, `leeway` 60s.
    static let cases: [LifetimeCase] = [
        LifetimeCase("exp missing", accepted: false) { _ in ["exp": nil] },
        LifetimeCase("exp an hour past", accepted: false) { now in ["iat": now - 7200, "nbf": now - 7200, "exp": now - 3600] },
        LifetimeCase("nbf an hour in the future", accepted: false) { now in ["nbf": now + 3600, "exp": now + 7200] },
        LifetimeCase("iat 2 minutes in the future, beyond the 60s leeway", accepted: false) { now in ["iat": now + 120, "nbf": nil] },
        LifetimeCase("control: iat 30s in the future, within the leeway", accepted: true) { now in ["iat": now + 30, "nbf": nil] },
        LifetimeCase("lifetime exactly the max (exp - iat = 24h)", accepted: true) { now in ["iat": now, "exp": now + day] },
        LifetimeCase("lifetime just under the max (24h - 1s)", accepted: true) { now in ["iat": now, "exp": now + day - 1] },
        LifetimeCase("lifetime just over the max (24h + 1s)", accepted: false) { now in ["iat": now, "exp": now + day + 1] },
        LifetimeCase("a long-lived token near its end (iat 24h ago, exp in 1 min)", accepted: false) { now in
            ["iat": now - day, "nbf": now - day, "exp": now + 60]
        },
        LifetimeCase("exp ten years ahead, no iat", accepted: false) { now in ["iat": nil, "exp": now + 3650 * day] },
        LifetimeCase("exp 24h + leeway + 2 min ahead, no iat", accepted: false) { now in ["iat": nil, "exp": now + day + 180] },
        LifetimeCase("control: exp 23h ahead, no iat", accepted: true) { now in ["iat": nil, "exp": now + day - 3600] },
        LifetimeCase("exp = 1e18 with iat", accepted: false) { _ in ["exp": 1e18] },
    ]

    @Test("T25: a token outside its validity window, or living longer than max_token_lifetime, is refused with 401 invalid_token on both decision paths", arguments: cases)
    func lifetimeIsChecked(_ testCase: LifetimeCase) async throws {
        try await withJWKS { jwksURL in
            let fixture = try GatewayFixture(policy: Self.policy(jwksURL: jwksURL))
            let now = Int(Date().timeIntervalSince1970)
            let token = try Self.issuer.es256(Self.issuer.claims(testCase.overrides(now)))
            try await fixture.withGatewayServer { port in
                for path in DecisionPath.allCases {
                    let answer = try await path.answer(port: port, bearer: token)
                    if testCase.accepted {
                        #expect(answer.status == 200, "\(path)")
                        #expect(answer.header("X-Auth-Subject") == "alice", "\(path)")
                    } else {
                        #expect(answer.isInvalidToken, "\(path): \(answer.statusLine) \(answer.headers)")
                    }
                }
            }
        }
    }

    @Test("T25: a token over the max is refused for its lifetime, not for another reason")
    func overMaxReasonIsTheLifetime() async throws {
        try await withJWKS { jwksURL in
            let fixture = try GatewayFixture(policy: Self.policy(jwksURL: jwksURL))
            let now = Int(Date().timeIntervalSince1970)
            for (overrides, fragment) in [
                (["iat": now, "exp": now + Self.day + 1], "exceeds max_token_lifetime"),
                (["iat": nil, "exp": now + 3650 * Self.day], "beyond max_token_lifetime"),
            ] as [([String: Any?], String)] {
                let token = try Self.issuer.es256(Self.issuer.claims(overrides))
                let decision = await fixture.gateway.engine.decide(
                    headers: forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(token)")]), peer: IPAddress("127.0.0.1"))
                guard case .deny(let denial) = decision else {
                    Issue.record("allowed: \(overrides)")
                    continue
                }
                #expect(denial.kind == .invalidCredential)
                #expect(denial.reason.contains(fragment), "\(denial.reason)")
            }
        }
    }

    @Test("T25: an operator can raise max_token_lifetime: a 7-day token passes an issuer set to 30d and is refused by the default")
    func operatorCanRaiseTheMax() async throws {
        try await withJWKS { jwksURL in
            let now = Int(Date().timeIntervalSince1970)
            let token = try Self.issuer.es256(Self.issuer.claims(["iat": now, "exp": now + 7 * Self.day]))
            let raised = try GatewayFixture(policy: Self.policy(jwksURL: jwksURL, extra: "max_token_lifetime: 30d"))
            let standard = try GatewayFixture(policy: Self.policy(jwksURL: jwksURL))
            try await raised.withGatewayServer { port in
                for path in DecisionPath.allCases {
                    let answer = try await path.answer(port: port, bearer: token)
                    #expect(answer.status == 200, "\(path)")
                }
            }
            try await standard.withGatewayServer { port in
                for path in DecisionPath.allCases {
                    let answer = try await path.answer(port: port, bearer: token)
                    #expect(answer.isInvalidToken, "\(path)")
                }
            }
        }
    }

    // MARK: Policy

    static let head = "gateway:\n  public_url: https://mcp.example.com\n  trusted_proxies: []\n"

    static func issuerYAML(_ extra: String) -> String {
        head + "issuers:\n  corp:\n    issuer: https://i.test\n    jwks_url: https://i.test/jwks\n    \(extra)\n"
    }

    @Test("T25: max_token_lifetime defaults to 24h and takes a duration up to 365d", arguments: [
        ("", 86400.0), ("max_token_lifetime: 30d", 2_592_000), ("max_token_lifetime: 90m", 5400), ("max_token_lifetime: 365d", 31_536_000),
    ])
    func maxTokenLifetimeLoads(_ testCase: (String, Double)) throws {
        let loaded = try PolicyLoader.load(yaml: Self.issuerYAML(testCase.0), file: "p.yaml")
        #expect(loaded.policy.issuer(named: "corp")?.maxTokenLifetime == testCase.1)
    }

    @Test("T25: an invalid max_token_lifetime is refused with file:line", arguments: [
        ("max_token_lifetime: 0s", "max_token_lifetime must be between 1s and 365d"),
        ("max_token_lifetime: 366d", "max_token_lifetime must be between 1s and 365d"),
        ("max_token_lifetime: inf", "max_token_lifetime must be between 1s and 365d"),
        ("max_token_lifetime: forever", "max_token_lifetime must be a duration"),
        ("max_token_lifetime: [1h]", "max_token_lifetime"),
    ])
    func invalidMaxTokenLifetimeIsRefused(_ testCase: (String, String)) throws {
        let error = try #require(throws: PolicyLoadError.self) { try PolicyLoader.load(yaml: Self.issuerYAML(testCase.0), file: "bad.yaml") }
        let matching = error.errors.filter { $0.message.contains(testCase.1) }
        #expect(!matching.isEmpty, "expected '\(testCase.1)' in \(error.description)")
        #expect(matching.first?.line == 8, "\(error.description)")
        #expect(error.description.contains("bad.yaml:8: "))
    }

    // MARK: Built-in issuer

    @Test("T25: the built-in issuer's tokens stay within its max_token_lifetime, at the longest access_token_ttl too")
    func builtinTokensStayWithinTheMax() async throws {
        let policy = OAuthEndpointTests.policy.replacingOccurrences(of: "builtin: { kind: builtin }", with: "builtin: { kind: builtin, access_token_ttl: 24h }")
        let fixture = try GatewayFixture(policy: policy)
        let builtin = try #require(fixture.gateway.engine.policy.builtinIssuer)
        let settings = try #require(builtin.authorizationServer)
        #expect(settings.accessTokenLifetime == 86400)
        #expect(settings.accessTokenLifetime <= builtin.maxTokenLifetime)
        let token = try await OAuthEndpointTests.mint(fixture, grant: try OAuthEndpointTests.grant(in: fixture.store))
        let payload = try #require(Base64URL.decodeJSONObject(token.split(separator: ".")[1]))
        let exp = try #require(payload["exp"] as? Double)
        let iat = try #require(payload["iat"] as? Double)
        #expect(exp - iat > 0)
        #expect(exp - iat <= builtin.maxTokenLifetime)
        try await fixture.withGatewayServer { port in
            for path in DecisionPath.allCases {
                let answer = try await path.answer(port: port, uri: "/ffmpeg/mcp", bearer: token)
                #expect(answer.status == 200, "\(path)")
                #expect(answer.header("X-Auth-Subject") == "alice", "\(path)")
            }
        }
    }

    @Test("T25: access_token_ttl beyond 24h is refused at load, so the built-in issuer cannot sign past its own max")
    func builtinTTLBeyondTheMaxIsRefused() throws {
        let yaml = Self.head + "issuers:\n  builtin:\n    kind: builtin\n    access_token_ttl: 25h\n"
        let error = try #require(throws: PolicyLoadError.self) { try PolicyLoader.load(yaml: yaml, file: "bad.yaml") }
        #expect(error.description.contains("bad.yaml:7: "), "\(error.description)")
        #expect(error.description.contains("access_token_ttl must be between 1s and 86400s"), "\(error.description)")
    }

    // MARK: Helpers

    static func policy(jwksURL: String, extra: String = "") -> String {
        testPolicy(
            issuers: """
                issuers:
                  corp:
                    issuer: \(issuer.issuer)
                    jwks_url: \(jwksURL)
                    algorithms: [ES256]
                    \(extra)

                """,
            routes: """
                  - name: ffmpeg
                    match: { host: mcp.example.com, path: "/ffmpeg/**" }
                    accept: [jwt]
                    require: { scopes: [ffmpeg] }

                """)
    }

    /// Runs `body` with the URL of a loopback JWKS serving the test issuer's keys.
    func withJWKS(_ body: (String) async throws -> Void) async throws {
        let endpoint = JWKSEndpoint()
        endpoint.serve(Self.issuer.jwks())
        let router = Router<BasicRequestContext>()
        endpoint.register(on: router)
        let server = try await LoopbackServer(router: router)
        do {
            try await body("\(server.baseURL)/jwks.json")
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }
}
