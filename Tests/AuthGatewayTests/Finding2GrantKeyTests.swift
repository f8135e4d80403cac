@testable import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import TokenStore

/// Issue 11, findings 2 and D: an OAuth grant obtained by signing in with an API key ends when the key is revoked,
/// rotated away or expires, and never opens more routes than the key itself.
@Suite("Finding 2: a grant signed in with an API key ends with the key and keeps its restrictions")
struct Finding2GrantKeyTests {
    static let origin = "https://mcp.example.com"

    static let policy = testPolicy(
        issuers: "issuers:\n  builtin: { kind: builtin }",
        routes: """
              - name: openmemory-messages
                match: { host: mcp.example.com, path: "/openmemory/messages/**" }
                resource: https://mcp.example.com/openmemory
                accept: [jwt, api_key]
                issuers: [builtin]
                require: { scopes: [memory] }
              - name: openmemory-bound
                match: { host: mcp.example.com, path: "/openmemory/{client_name}/sse/{user_id}" }
                resource: https://mcp.example.com/openmemory
                accept: [jwt, api_key]
                issuers: [builtin]
                require: { scopes: [memory], bind: { user_id: subject } }
              - name: ffmpeg
                match: { host: mcp.example.com, path: "/ffmpeg/**" }
                accept: [jwt, api_key]
                issuers: [builtin]
                require: { scopes: [ffmpeg] }
            """)

    /// The ways an operator ends a key.
    enum KeyEnd: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case revokeKey, rotateKeyWithoutOverlap, authctlRevokeKey
        var testDescription: String { rawValue }

        func apply(to id: String, in store: TokenStore) async throws {
            switch self {
            case .revokeKey: try store.revokeKey(id: id)
            case .rotateKeyWithoutOverlap: _ = try store.rotateKey(id: id, overlap: 0)
            case .authctlRevokeKey:
                // Another process: the gateway learns of it through the store's change counter, which empties the
                // cached grant status within `externalChangeDelay`.
                let result = try ProcessRunner.run("authctl", ["--db", store.path, "revoke-key", id])
                #expect(result.status == 0, "\(result.stderr)")
                try await Task.sleep(for: TokenStore.externalChangeDelay * 5)
            }
        }
    }

    @Test("finding 2: revoke-key and rotate-key --overlap 0 end the grant signed in with the key: access token at /auth and refresh", arguments: KeyEnd.allCases)
    func keyEndEndsGrant(_ end: KeyEnd) async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        let (key, id) = try fixture.issueKey(subject: "carol", scopes: ["ffmpeg"])
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: Self.origin + "/ffmpeg")
        try await fixture.withLiveServer { http in
            let tokens = try await flow.tokens(http, [("api_key", key)])
            #expect(tokens.status == .ok)
            let access = try #require(tokens.json["access_token"] as? String)
            let refresh = try #require(tokens.json["refresh_token"] as? String)
            // Decided once before the key ends, so the decision caches hold this token's grant.
            #expect(try await OAuthTokenEndpointTests.auth(http, token: access).status == .ok)

            try await end.apply(to: id, in: fixture.store)

            let denied = try await OAuthTokenEndpointTests.auth(http, token: access)
            #expect(denied.status == .unauthorized)
            #expect(denied.header("X-Auth-Subject") == nil)
            let refreshed = try await flow.refresh(http, refresh)
            #expect(refreshed.json["error"] as? String == "invalid_grant")
        }
    }

    @Test("finding 2: a grant signed in with a key ends when the key expires, even with no change to the store after that")
    func keyExpiryEndsGrant() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        let (key, id) = try fixture.issueKey(subject: "carol", scopes: ["ffmpeg"])
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: Self.origin + "/ffmpeg")
        try await fixture.withLiveServer { http in
            let tokens = try await flow.tokens(http, [("api_key", key)])
            #expect(tokens.status == .ok)
            let access = try #require(tokens.json["access_token"] as? String)
            let refresh = try #require(tokens.json["refresh_token"] as? String)
            // rotate-key with an overlap gives the old key an expiry; from then on only the clock moves.
            _ = try fixture.store.rotateKey(id: id, overlap: 3)
            let expiry = try #require(try fixture.store.key(id: id)?.expiresAt)
            let before = try await OAuthTokenEndpointTests.auth(http, token: access)
            #expect(before.status == .ok || Date() >= expiry)

            try await Task.sleep(for: .seconds(expiry.timeIntervalSinceNow + 0.3))

            #expect(try await OAuthTokenEndpointTests.auth(http, token: access).status == .unauthorized)
            #expect(try await flow.refresh(http, refresh).json["error"] as? String == "invalid_grant")
        }
    }

    @Test("finding 2: nothing issued from a grant signed in with an expiring key outlives the key: access token exp, expires_in, refresh tokens")
    func tokensEndWithKey() async throws {
        // Access tokens that would live two hours, for a key that ends in one.
        let fixture = try GatewayFixture(policy: Self.policy.replacingOccurrences(
            of: "builtin: { kind: builtin }", with: "builtin: { kind: builtin, access_token_ttl: 2h }"))
        let (key, id) = try fixture.issueKey(subject: "carol", scopes: ["ffmpeg"], expiresAt: Date().addingTimeInterval(3600))
        // Compared with the key's stored expiry: the store keeps dates to the millisecond.
        let keyExpiry = try #require(try fixture.store.key(id: id)?.expiresAt)
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: Self.origin + "/ffmpeg")
        try await fixture.withLiveServer { http in
            let tokens = try await flow.tokens(http, [("api_key", key)])
            #expect(tokens.status == .ok)
            #expect((tokens.json["expires_in"] as? Int ?? .max) <= 3600)
            let access = try #require(tokens.json["access_token"] as? String)
            let payload = try #require(Base64URL.decodeJSONObject(access.split(separator: ".")[1]))
            #expect((payload["exp"] as? Double ?? .infinity) <= keyExpiry.timeIntervalSince1970)
            let refresh = try #require(tokens.json["refresh_token"] as? String)
            let grant = try #require(try fixture.store.grant(ofRefreshToken: refresh))
            #expect(grant.expiresAt <= keyExpiry)
        }
    }

    @Test("finding D: a key restricted to one route signs in for the shared resource and its tokens open that route only")
    func routeRestrictionCarriesOver() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        let (key, _) = try fixture.issueKey(subject: "carol", scopes: ["memory"], route: "openmemory-messages")
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: Self.origin + "/openmemory")
        try await fixture.withLiveServer { http in
            // The key itself: the messages route only.
            #expect(try await OAuthTokenEndpointTests.auth(http, token: key, uri: "/openmemory/claude/sse/carol").status == .forbidden)
            let tokens = try await flow.tokens(http, [("api_key", key)])
            #expect(tokens.status == .ok)
            let access = try #require(tokens.json["access_token"] as? String)
            #expect(try await OAuthTokenEndpointTests.auth(http, token: access, uri: "/openmemory/messages/?session_id=s1").status == .ok)
            #expect(try await OAuthTokenEndpointTests.auth(http, token: access, uri: "/openmemory/claude/sse/carol").status == .forbidden)

            let refreshed = try await flow.refresh(http, try #require(tokens.json["refresh_token"] as? String))
            let next = try #require(refreshed.json["access_token"] as? String)
            #expect(try await OAuthTokenEndpointTests.auth(http, token: next, uri: "/openmemory/claude/sse/carol").status == .forbidden)
        }
    }
}
