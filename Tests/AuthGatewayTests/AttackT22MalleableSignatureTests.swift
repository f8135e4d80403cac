@testable import AuthGateway
import Crypto
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import TokenStore

/// T22 (mpdavis/python-jose #403): an ECDSA signature (r, s) has a twin (r, n − s) that verifies for the same
/// message, so one token has two texts. Whatever keys on the token text (the verified-token cache does, by SHA-256)
/// must never be what a revocation depends on: these tests revoke a grant, or drop a key, and present the twin the
/// gateway has never seen, before and after the original was cached.
@Suite("T22: malleable ECDSA signatures")
struct AttackT22MalleableSignatureTests {
    /// Which texts of the token were decided (and so cached) before the grant was revoked.
    enum SeenBefore: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case neither, original, twin, both
        var testDescription: String { "seen before revocation: \(rawValue)" }
    }

    @Test("T22 control: the (r, n - s) twin of a built-in token is a second text that verifies (swift-crypto accepts a high s) and is accepted while the grant lives")
    func twinVerifies() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let token = try await OAuthEndpointTests.mint(fixture, grant: try OAuthEndpointTests.grant(in: fixture.store))
        let twin = try Self.malleated(token)
        #expect(twin != token)
        #expect(twin.split(separator: ".").prefix(2) == token.split(separator: ".").prefix(2))
        let publicKey = try fixture.store.currentSigningKey().privateKey.publicKey
        #expect(try Self.verifies(token, with: publicKey))
        #expect(try Self.verifies(twin, with: publicKey))
        try await fixture.withGatewayServer { port in
            for path in DecisionPath.allCases {
                for text in [token, twin] {
                    let answer = try await path.answer(port: port, uri: "/ffmpeg/mcp", bearer: text)
                    #expect(answer.status == 200, "\(path)")
                    #expect(answer.header("X-Auth-Subject") == "alice", "\(path)")
                }
            }
        }
    }

    @Test("T22: once the grant is revoked, the token and its malleated twin are both refused on both decision paths, whichever text was cached", arguments: SeenBefore.allCases)
    func revokedGrantRefusesTheTwin(_ seen: SeenBefore) async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let grant = try OAuthEndpointTests.grant(in: fixture.store)
        let token = try await OAuthEndpointTests.mint(fixture, grant: grant)
        let twin = try Self.malleated(token)
        try await fixture.withGatewayServer { port in
            let before: [String] =
                switch seen {
                case .neither: []
                case .original: [token]
                case .twin: [twin]
                case .both: [token, twin]
                }
            for text in before {
                for path in DecisionPath.allCases {
                    let answer = try await path.answer(port: port, uri: "/ffmpeg/mcp", bearer: text)
                    #expect(answer.status == 200, "\(path)")
                }
            }
            try fixture.store.revokeGrant(id: grant.id)
            // The twin first: the text the gateway is least likely to have seen.
            for text in [twin, token] {
                for path in DecisionPath.allCases {
                    let answer = try await path.answer(port: port, uri: "/ffmpeg/mcp", bearer: text)
                    #expect(answer.isInvalidToken, "\(path) \(text == twin ? "twin" : "original"): \(answer.statusLine)")
                }
            }
        }
    }

    @Test("T22: revoking the malleated twin at /oauth/revoke ends the grant, so the original text is refused too")
    func revokingTheTwinEndsTheOriginal() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let grant = try OAuthEndpointTests.grant(in: fixture.store)
        let token = try await OAuthEndpointTests.mint(fixture, grant: grant)
        let twin = try Self.malleated(token)
        try await fixture.withLiveServer { http in
            #expect(try await OAuthTokenEndpointTests.auth(http, token: token).status == .ok)
            let revoked = try await OAuthTokenEndpointTests.post(http, [("token", twin), ("client_id", grant.clientID)], to: "/oauth/revoke")
            #expect(revoked.status == .ok)
            #expect(try await OAuthTokenEndpointTests.auth(http, token: token).status == .unauthorized)
            #expect(try await OAuthTokenEndpointTests.auth(http, token: twin).status == .unauthorized)
        }
        #expect(try await fixture.store.grantStatus(id: grant.id) == .inactive)
    }

    @Test("T22: an external issuer's cached token and its never-seen twin are both refused once the key leaves the JWKS")
    func droppedKeyRefusesTheTwin() async throws {
        let issuer = try TestIssuer()
        let endpoint = JWKSEndpoint()
        endpoint.serve(issuer.jwks())
        let router = Router<BasicRequestContext>()
        endpoint.register(on: router)
        let server = try await LoopbackServer(router: router)
        defer { Task { await server.stop() } }
        let fixture = try GatewayFixture(
            policy: testPolicy(
                issuers: """
                    issuers:
                      corp: { issuer: "\(issuer.issuer)", jwks_url: "\(server.baseURL)/jwks.json", algorithms: [ES256], jwks_cache_ttl: 0s, jwks_min_refresh_interval: 0s }

                    """,
                routes: """
                      - { name: ffmpeg, match: { host: mcp.example.com, path: "/ffmpeg/**" }, accept: [jwt], require: { scopes: [ffmpeg] } }

                    """))
        let token = try issuer.es256(issuer.claims())
        let twin = try Self.malleated(token)
        #expect(try Self.verifies(token, with: issuer.ecKey.publicKey))
        #expect(try Self.verifies(twin, with: issuer.ecKey.publicKey))
        try await fixture.withGatewayServer { port in
            for path in DecisionPath.allCases {
                let answer = try await path.answer(port: port, bearer: token)
                #expect(answer.status == 200, "\(path)")
            }
            // Another key under the same kid: the original's cache entry belongs to a key set that is gone.
            endpoint.serve(try TestIssuer(issuer: issuer.issuer, ecKid: issuer.ecKid).jwks())
            for text in [twin, token] {
                for path in DecisionPath.allCases {
                    let answer = try await path.answer(port: port, bearer: text)
                    #expect(answer.isInvalidToken, "\(path) \(text == twin ? "twin" : "original"): \(answer.statusLine)")
                }
            }
        }
    }

    // MARK: Helpers

    /// The order n of the P-256 group, big-endian.
    static let p256Order: [UInt8] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
    ]

    /// The same token with its ES256 signature (r, s) replaced by (r, n − s).
    static func malleated(_ token: String) throws -> String {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        let signature = try #require(Base64URL.decode(parts[2]))
        try #require(signature.count == 64)
        let s = Array(signature.suffix(32))
        var negated = [UInt8](repeating: 0, count: 32)
        var borrow = 0
        for index in (0..<32).reversed() {
            var difference = Int(p256Order[index]) - Int(s[index]) - borrow
            borrow = difference < 0 ? 1 : 0
            if difference < 0 { difference += 256 }
            negated[index] = UInt8(difference)
        }
        return "\(parts[0]).\(parts[1])." + TestIssuer.base64url(signature.prefix(32) + negated)
    }

    static func verifies(_ token: String, with key: P256.Signing.PublicKey) throws -> Bool {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        let signature = try P256.Signing.ECDSASignature(rawRepresentation: try #require(Base64URL.decode(parts[2])))
        return key.isValidSignature(signature, for: Data("\(parts[0]).\(parts[1])".utf8))
    }
}
