@testable import AuthGateway
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import TokenStore

/// The built-in authorization server over HTTP: its RFC 8414 metadata, the endpoints the metadata names, and the
/// access tokens it signs as the gateway's `/auth` check sees them.
@Suite("Built-in authorization server over HTTP")
struct OAuthEndpointTests {
    static let origin = "https://mcp.example.com"
    static let externalIssuer = "https://sso.example.com/realms/mcp"

    /// A built-in issuer and an external one; ffmpeg lists the external issuer first, memory trusts only the
    /// built-in one and requires no scope, so a refusal there is about the audience alone.
    static let policy = testPolicy(
        issuers: """
            issuers:
              builtin: { kind: builtin }
              corp: { issuer: "\(externalIssuer)", jwks_url: "http://127.0.0.1:9/jwks" }
            """,
        routes: """
              - name: ffmpeg
                match: { host: mcp.example.com, path: "/ffmpeg/**" }
                accept: [jwt, api_key]
                issuers: [corp, builtin]
                require: { scopes: [ffmpeg] }
              - name: memory
                match: { host: mcp.example.com, path: "/memory/**" }
                accept: [jwt]
                issuers: [builtin]
            """)

    /// The same server under a public URL with a path: the issuer is https://mcp.example.com/tenant.
    static let tenantPolicy = """
        gateway:
          public_url: https://mcp.example.com/tenant
          realm: mcp
          trusted_proxies: [127.0.0.1/32, "::1/128"]
        issuers:
          builtin: { kind: builtin }
        routes:
          - name: ffmpeg
            match: { host: mcp.example.com, path: "/tenant/ffmpeg/**" }
            resource: https://mcp.example.com/tenant/ffmpeg
            accept: [jwt]
            require: { scopes: [ffmpeg] }
        """

    static let noBuiltinPolicy = testPolicy(
        issuers: "issuers:\n  corp: { issuer: \"\(externalIssuer)\", jwks_url: \"http://127.0.0.1:9/jwks\" }",
        routes: "  - name: ffmpeg\n    match: { path: \"/ffmpeg/**\" }\n    accept: [jwt]\n")

    // MARK: Authorization server metadata (RFC 8414)

    @Test("a root issuer's metadata is served at both well-known names with issuer exactly the public URL", arguments: [
        "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration",
    ])
    func rootIssuerMetadata(_ path: String) async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        try await fixture.withLiveServer { client in
            try await client.execute(uri: path, method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.header("Content-Type")?.hasPrefix("application/json") == true)
                #expect(response.header("Access-Control-Allow-Origin") == "*")
                let metadata = response.json
                #expect(metadata["issuer"] as? String == Self.origin)
                #expect(metadata["authorization_endpoint"] as? String == Self.origin + "/oauth/authorize")
                #expect(metadata["token_endpoint"] as? String == Self.origin + "/oauth/token")
                #expect(metadata["registration_endpoint"] as? String == Self.origin + "/oauth/register")
                #expect(metadata["jwks_uri"] as? String == Self.origin + "/oauth/jwks.json")
                #expect(metadata["code_challenge_methods_supported"] as? [String] == ["S256"])
                #expect(metadata["response_types_supported"] as? [String] == ["code"])
                #expect(metadata["authorization_response_iss_parameter_supported"] as? Bool == true)
                #expect(Set(metadata["scopes_supported"] as? [String] ?? []) == ["ffmpeg"])
            }
        }
    }

    @Test("a root issuer has no metadata under a path suffix", arguments: [
        "/.well-known/oauth-authorization-server/tenant", "/.well-known/openid-configuration/ffmpeg",
    ])
    func rootIssuerHasNoPathMetadata(_ path: String) async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        try await fixture.withLiveServer { client in
            try await client.execute(uri: path, method: .get) { response in
                #expect(response.status == .notFound)
            }
        }
    }

    @Test("a path issuer's metadata is served where RFC 8414 and OpenID discovery derive it, with issuer exactly the public URL", arguments: [
        "/.well-known/oauth-authorization-server/tenant", "/.well-known/openid-configuration/tenant", "/tenant/.well-known/openid-configuration",
    ])
    func pathIssuerMetadata(_ path: String) async throws {
        let fixture = try GatewayFixture(policy: Self.tenantPolicy)
        try await fixture.withLiveServer { client in
            try await client.execute(uri: path, method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.json["issuer"] as? String == "https://mcp.example.com/tenant")
                #expect(response.json["token_endpoint"] as? String == "https://mcp.example.com/tenant/oauth/token")
            }
        }
    }

    @Test("a path issuer has no metadata at the root or under another path", arguments: [
        "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server/other",
        "/tenant/.well-known/oauth-authorization-server",
    ])
    func pathIssuerHasNoRootMetadata(_ path: String) async throws {
        let fixture = try GatewayFixture(policy: Self.tenantPolicy)
        try await fixture.withLiveServer { client in
            try await client.execute(uri: path, method: .get) { response in
                #expect(response.status == .notFound)
            }
        }
    }

    @Test("without a builtin issuer there is no authorization server metadata and no token endpoint", arguments: [
        ("/.well-known/oauth-authorization-server", HTTPRequest.Method.get), ("/.well-known/openid-configuration", .get), ("/oauth/token", .post),
        ("/oauth/register", .post),
    ])
    func noBuiltinIssuer(_ testCase: (String, HTTPRequest.Method)) async throws {
        let fixture = try GatewayFixture(policy: Self.noBuiltinPolicy)
        try await fixture.withLiveServer { client in
            let headers: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]
            try await client.execute(uri: testCase.0, method: testCase.1, headers: headers, body: .init(string: "grant_type=client_credentials")) { response in
                #expect(response.status == .notFound)
            }
        }
    }

    /// The policies the routing test runs under, by name.
    enum Issuer: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case root, tenant
        var policy: String { self == .root ? OAuthEndpointTests.policy : OAuthEndpointTests.tenantPolicy }
        var metadataPath: String { self == .root ? "/.well-known/oauth-authorization-server" : "/.well-known/oauth-authorization-server/tenant" }
        var testDescription: String { rawValue }
    }

    @Test("every endpoint the metadata names is served at the path it names", arguments: Issuer.allCases)
    func everyAdvertisedEndpointIsRouted(_ issuer: Issuer) async throws {
        let fixture = try GatewayFixture(policy: issuer.policy)
        try await fixture.withLiveServer { client in
            let metadata = try await client.execute(uri: issuer.metadataPath, method: .get) { $0.json }
            let posted = ["authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint", "introspection_endpoint"]
            for name in posted {
                let url = try #require(metadata[name] as? String, "\(name) missing")
                let path = try #require(URLComponents(string: url)?.path)
                let headers: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]
                try await client.execute(uri: path, method: .post, headers: headers, body: .init(string: "")) { response in
                    #expect(response.status != .notFound, "\(name) \(path) is not routed")
                }
            }
            let jwks = try #require(metadata["jwks_uri"] as? String)
            let jwksPath = try #require(URLComponents(string: jwks)?.path)
            try await client.execute(uri: jwksPath, method: .get) { response in
                #expect(response.status == .ok, "jwks_uri \(jwksPath) answered \(response.status)")
                #expect((response.json["keys"] as? [Any])?.isEmpty == false)
            }
        }
    }

    @Test("CORS preflight on the metadata and the token endpoint is answered for browser-based clients", arguments: [
        ("/.well-known/oauth-authorization-server", "GET"), ("/.well-known/openid-configuration", "GET"), ("/oauth/token", "POST"),
        ("/oauth/register", "POST"), ("/oauth/revoke", "POST"), ("/oauth/jwks.json", "GET"),
    ])
    func corsPreflight(_ testCase: (String, String)) async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        try await fixture.withLiveServer { client in
            let headers: HTTPFields = [.origin: "http://localhost:6274", .accessControlRequestMethod: testCase.1]
            try await client.execute(uri: testCase.0, method: .options, headers: headers) { response in
                #expect(response.status == .noContent)
                #expect(response.header("Access-Control-Allow-Origin") == "*")
                #expect(response.header("Access-Control-Allow-Methods")?.contains(testCase.1) == true)
            }
        }
    }

    @Test("OAuth error answers are readable cross-origin and never cached")
    func errorAnswersAreCORSAndNoStore() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        try await fixture.withLiveServer { client in
            let headers: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]
            try await client.execute(uri: "/oauth/token", method: .post, headers: headers, body: .init(string: "grant_type=authorization_code")) { response in
                #expect(response.status == .unauthorized)
                #expect(response.json["error"] as? String == "invalid_client")
                #expect(response.header("Access-Control-Allow-Origin") == "*")
                #expect(response.header("Cache-Control") == "no-store")
            }
        }
    }

    // MARK: Protected resource metadata

    @Test("protected resource metadata names the built-in server first when a route also trusts an external issuer")
    func builtinServerFirstInPRM() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/.well-known/oauth-protected-resource/ffmpeg", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.json["authorization_servers"] as? [String] == [Self.origin, Self.externalIssuer])
            }
        }
    }

    @Test("with a path public URL the 401 points at protected resource metadata that is served at its RFC 9728 location")
    func pathIssuerResourceMetadata() async throws {
        let fixture = try GatewayFixture(policy: Self.tenantPolicy)
        try await fixture.withLiveServer { client in
            let challenge = try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/tenant/ffmpeg/mcp")) {
                $0.header("WWW-Authenticate") ?? ""
            }
            let expected = "https://mcp.example.com/.well-known/oauth-protected-resource/tenant/ffmpeg"
            #expect(challenge.contains("resource_metadata=\"\(expected)\""), "\(challenge)")
            try await client.execute(uri: "/.well-known/oauth-protected-resource/tenant/ffmpeg", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.json["resource"] as? String == "https://mcp.example.com/tenant/ffmpeg")
                #expect(response.json["authorization_servers"] as? [String] == ["https://mcp.example.com/tenant"])
            }
        }
    }

    // MARK: Access tokens at /auth

    /// A grant for alice, by a registered public client, for `resource`.
    static func grant(in store: TokenStore, resource: String = origin + "/ffmpeg", scope: [String] = ["ffmpeg"]) throws -> OAuthGrant {
        let client = try store.registerClient(ClientRegistration(
            name: "claude", redirectURIs: ["http://127.0.0.1/cb"], grantTypes: ["authorization_code", "refresh_token"], authMethod: "none", scope: nil)).client
        let code = try store.createAuthorization(
            clientID: client.id, subject: "alice", scope: scope, resource: resource, redirectURI: "http://127.0.0.1/cb",
            codeChallenge: OAuthRulesTests.rfcChallenge, codeLifetime: 60, grantLifetime: 3600)
        guard case .redeemed(_, let grant) = try store.redeemCode(code) else { throw OAuthStoreTests.Unexpected("code not redeemed") }
        return grant
    }

    static func mint(_ fixture: GatewayFixture, grant: OAuthGrant, scopes: [String] = ["ffmpeg"]) async throws -> String {
        let context = try #require(AuthorizationServerContext(policy: fixture.gateway.engine.policy))
        return try await AccessTokenIssuer(store: fixture.store).issue(for: grant, scopes: scopes, context: context)
    }

    static func check(_ client: some TestClientProtocol, uri: String, token: String) async throws -> TestResponse {
        try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: uri, extra: [("Authorization", "Bearer \(token)")])) { $0 }
    }

    @Test("an access token the built-in server signed passes /auth on the route whose resource is its audience")
    func mintedTokenIsAccepted() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        let grant = try Self.grant(in: fixture.store)
        let token = try await Self.mint(fixture, grant: grant)
        try await fixture.withLiveServer { client in
            let response = try await Self.check(client, uri: "/ffmpeg/mcp", token: token)
            #expect(response.status == .ok)
            #expect(response.header("X-Auth-Subject") == "alice")
            #expect(response.header("X-Auth-Method") == "jwt")
            #expect(response.header("X-Auth-Issuer") == Self.origin)
            #expect(response.header("X-Auth-Client") == grant.clientID)
            #expect(response.header("X-Auth-Scopes") == "ffmpeg")
        }
    }

    @Test("an access token is refused on a route whose resource is not its audience")
    func mintedTokenIsBoundToItsResource() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        let token = try await Self.mint(fixture, grant: try Self.grant(in: fixture.store))
        try await fixture.withLiveServer { client in
            let response = try await Self.check(client, uri: "/memory/mcp", token: token)
            #expect(response.status == .unauthorized)
            #expect(response.header("WWW-Authenticate")?.contains("invalid_token") == true)
            let own = try await Self.check(client, uri: "/memory/mcp", token: try await Self.mint(fixture, grant: try Self.grant(in: fixture.store, resource: Self.origin + "/memory", scope: [])))
            #expect(own.status == .ok)
        }
    }

    /// The ways a token's grant is ended after the token was issued.
    enum GrantEnd: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case revokeGrant, revokeSubject, disableUser, revokeClient
        var testDescription: String { rawValue }
    }

    @Test("an access token is refused as soon as its grant ends, even though it has not expired", arguments: GrantEnd.allCases)
    func revokedGrantEndsToken(_ end: GrantEnd) async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        try fixture.store.addUser(username: "alice", password: "correct horse battery")
        let grant = try Self.grant(in: fixture.store)
        let token = try await Self.mint(fixture, grant: grant)
        try await fixture.withLiveServer { client in
            #expect(try await Self.check(client, uri: "/ffmpeg/mcp", token: token).status == .ok)
            switch end {
            case .revokeGrant: try fixture.store.revokeGrant(id: grant.id)
            case .revokeSubject: try fixture.store.revokeGrants(subject: "alice")
            case .disableUser: try fixture.store.setDisabled(username: "alice", true)
            case .revokeClient: try fixture.store.revokeClient(id: grant.clientID)
            }
            let response = try await Self.check(client, uri: "/ffmpeg/mcp", token: token)
            #expect(response.status == .unauthorized)
            #expect(response.header("X-Auth-Subject") == nil)
        }
    }

    /// A built-in-issuer token signed with the store's current key, with any header `typ` and claims.
    static func forged(_ fixture: GatewayFixture, typ: String?, claims: [String: Any?] = [:]) throws -> String {
        let key = try fixture.store.currentSigningKey()
        let now = Int(Date().timeIntervalSince1970)
        var body: [String: Any] = [
            "iss": origin, "sub": "alice", "aud": origin + "/ffmpeg", "exp": now + 300, "iat": now, "nbf": now, "scope": "ffmpeg", "client_id": "cli_x",
        ]
        for (name, value) in claims { body[name] = value }
        var header: [String: Any] = ["alg": "ES256", "kid": key.kid]
        if let typ { header["typ"] = typ }
        return try TestIssuer(issuer: origin).sign(body, header: header) { input in try key.privateKey.signature(for: input).rawRepresentation }
    }

    @Test("a built-in issuer token is accepted only with typ at+jwt (RFC 9068)", arguments: [
        ("at+jwt", true), ("AT+JWT", true), ("JWT", false), ("jwt", false), (nil, false),
    ] as [(String?, Bool)])
    func builtinTokensMustBeTypedAccessTokens(_ testCase: (String?, Bool)) async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        let grant = try Self.grant(in: fixture.store)
        let token = try Self.forged(fixture, typ: testCase.0, claims: ["sid": grant.id])
        try await fixture.withLiveServer { client in
            let response = try await Self.check(client, uri: "/ffmpeg/mcp", token: token)
            #expect(response.status == (testCase.1 ? .ok : .unauthorized))
        }
    }

    @Test("a built-in issuer token without a grant, or naming an unknown grant, is refused", arguments: [
        nil, "gr_unknown",
    ] as [String?])
    func builtinTokensNeedAnActiveGrant(_ sid: String?) async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        let token = try Self.forged(fixture, typ: "at+jwt", claims: ["sid": sid])
        try await fixture.withLiveServer { client in
            let response = try await Self.check(client, uri: "/ffmpeg/mcp", token: token)
            #expect(response.status == .unauthorized)
        }
    }
}
