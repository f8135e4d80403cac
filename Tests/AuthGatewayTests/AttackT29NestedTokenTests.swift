import AuthGateway
import Crypto
import Foundation
import Hummingbird
import Testing

/// T29 (pac4j GHSA-pm7g-w2cf-q238; RFC 7519 §5.2, RFC 7516): a token that wraps another token (a compact JWE, a
/// JWS announcing a nested JWT with `cty`, a JWS whose payload is itself a JWT) is refused with 401 `invalid_token`
/// before any claim is read: the gateway never unwraps, decrypts or reads claims from anything but a plain claims
/// set, even when the wrapper and the inner token are both signed by the trusted key.
@Suite("T29: nested and JWE-wrapped tokens")
struct AttackT29NestedTokenTests {
    static let issuer = try! TestIssuer()

    /// A wrapped token, built when the case runs from `inner` (a valid token for alice signed by the trusted key),
    /// and a fragment of the reason the decision must give: one that is decided before claims are read.
    struct WrappedCase: Sendable, CustomTestStringConvertible {
        let testDescription: String
        let reason: String
        let make: @Sendable (_ issuer: TestIssuer, _ inner: String) throws -> String

        init(_ name: String, reason: String, _ make: @escaping @Sendable (_ issuer: TestIssuer, _ inner: String) throws -> String) {
            self.testDescription = name
            self.reason = reason
            self.make = make
        }
    }

    static let jweReason = "JWE compact serialization"
    static let ctyReason = "'cty'"
    static let payloadReason = "payload is not a JSON claims object"

    static let cases: [WrappedCase] = [
        WrappedCase("a compact JWE (5 segments, dir + A256GCM, cty JWT)", reason: jweReason) { _, _ in
            let header = TestIssuer.segment(["alg": "dir", "enc": "A256GCM", "cty": "JWT"])
            return [header, "", TestIssuer.base64url(Data(count: 12)), TestIssuer.base64url(Data(repeating: 7, count: 300)), TestIssuer.base64url(Data(count: 16))]
                .joined(separator: ".")
        },
        WrappedCase("a compact JWE whose protected header claims the trusted ES256 kid", reason: jweReason) { issuer, _ in
            let header = TestIssuer.segment(["alg": "ES256", "kid": issuer.ecKid, "enc": "A256GCM"])
            return [header, "", TestIssuer.base64url(Data(count: 12)), TestIssuer.base64url(Data(repeating: 7, count: 300)), TestIssuer.base64url(Data(count: 16))]
                .joined(separator: ".")
        },
        WrappedCase("a valid JWS with two more segments appended (5 segments)", reason: jweReason) { _, inner in inner + ".x.y" },
        WrappedCase("a signed JWS with cty JWT whose payload is the inner JWT", reason: ctyReason) { issuer, inner in
            try signed(by: issuer, header: ["cty": "JWT"], payload: Data(inner.utf8))
        },
        WrappedCase("a signed JWS with cty JWT whose payload is a valid claims set", reason: ctyReason) { issuer, _ in
            try signed(by: issuer, header: ["cty": "JWT"], payload: try JSONSerialization.data(withJSONObject: issuer.claims()))
        },
        WrappedCase("a signed JWS with cty jwt (lower case) and a valid claims set", reason: ctyReason) { issuer, _ in
            try signed(by: issuer, header: ["cty": "jwt"], payload: try JSONSerialization.data(withJSONObject: issuer.claims()))
        },
        WrappedCase("a signed JWS without cty whose payload is the inner JWT's text", reason: payloadReason) { issuer, inner in
            try signed(by: issuer, header: [:], payload: Data(inner.utf8))
        },
        WrappedCase("a signed JWS whose payload is the inner JWT as a JSON string", reason: payloadReason) { issuer, inner in
            try signed(by: issuer, header: [:], payload: Data("\"\(inner)\"".utf8))
        },
        WrappedCase("a signed JWS whose payload is a JSON array holding the claims", reason: payloadReason) { issuer, _ in
            try signed(by: issuer, header: [:], payload: try JSONSerialization.data(withJSONObject: [issuer.claims()]))
        },
    ]

    @Test("T29: a JWE, a nested (cty) JWT, or a JWT whose payload is a JWT is refused with 401 invalid_token on both decision paths", arguments: cases)
    func wrappedTokenIsRefused(_ testCase: WrappedCase) async throws {
        try await withFixture { fixture in
            let token = try testCase.make(Self.issuer, try Self.issuer.es256(Self.issuer.claims()))
            try await fixture.withGatewayServer { port in
                for path in DecisionPath.allCases {
                    let answer = try await path.answer(port: port, bearer: token)
                    #expect(answer.isInvalidToken, "\(path): \(answer.statusLine) \(answer.headers)")
                }
            }
        }
    }

    @Test("T29: a wrapped token is refused before its claims are read (the reason is the wrapping, never a claim)", arguments: cases)
    func wrappedTokenIsRefusedBeforeClaims(_ testCase: WrappedCase) async throws {
        try await withFixture { fixture in
            let token = try testCase.make(Self.issuer, try Self.issuer.es256(Self.issuer.claims()))
            let decision = await fixture.gateway.engine.decide(
                headers: forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(token)")]), peer: IPAddress("127.0.0.1"))
            guard case .deny(let denial) = decision else {
                Issue.record("allowed")
                return
            }
            #expect(denial.kind == .invalidCredential)
            #expect(denial.reason.contains(testCase.reason), "\(denial.reason)")
        }
    }

    @Test("T29 control: the inner token on its own is accepted on both decision paths")
    func innerTokenAloneIsAccepted() async throws {
        try await withFixture { fixture in
            let inner = try Self.issuer.es256(Self.issuer.claims())
            try await fixture.withGatewayServer { port in
                for path in DecisionPath.allCases {
                    let answer = try await path.answer(port: port, bearer: inner)
                    #expect(answer.status == 200, "\(path)")
                    #expect(answer.header("X-Auth-Subject") == "alice", "\(path)")
                }
            }
        }
    }

    // MARK: Helpers

    /// A JWS over any payload bytes, signed with the issuer's trusted ES256 key under its kid, `typ: JWT` unless
    /// `header` says otherwise.
    static func signed(by issuer: TestIssuer, header extra: [String: Any], payload: Data) throws -> String {
        var header: [String: Any] = ["alg": "ES256", "kid": issuer.ecKid, "typ": "JWT"]
        for (name, value) in extra { header[name] = value }
        let input = TestIssuer.segment(header) + "." + TestIssuer.base64url(payload)
        return input + "." + TestIssuer.base64url(try issuer.ecKey.signature(for: Data(input.utf8)).rawRepresentation)
    }

    /// A gateway trusting the test issuer (ES256) on a jwt-only ffmpeg route, with its JWKS on loopback.
    func withFixture(_ body: (GatewayFixture) async throws -> Void) async throws {
        let endpoint = JWKSEndpoint()
        endpoint.serve(Self.issuer.jwks())
        let router = Router<BasicRequestContext>()
        endpoint.register(on: router)
        let server = try await LoopbackServer(router: router)
        let policy = testPolicy(
            issuers: """
                issuers:
                  corp: { issuer: "\(Self.issuer.issuer)", jwks_url: "\(server.baseURL)/jwks.json", algorithms: [ES256] }

                """,
            routes: """
                  - name: ffmpeg
                    match: { host: mcp.example.com, path: "/ffmpeg/**" }
                    accept: [jwt]
                    require: { scopes: [ffmpeg] }

                """)
        do {
            try await body(try GatewayFixture(policy: policy))
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }
}
