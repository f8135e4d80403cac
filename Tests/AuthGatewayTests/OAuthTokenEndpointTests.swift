@testable import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import TokenStore

/// `/oauth/token`, `/oauth/register` and `/oauth/revoke` over HTTP, with the tokens they hand out checked at `/auth`.
@Suite("Built-in authorization server token, registration and revocation endpoints")
struct OAuthTokenEndpointTests {
    static let resource = "https://mcp.example.com/ffmpeg"
    static let redirect = "http://127.0.0.1/cb"
    static let verifier = OAuthRulesTests.rfcVerifier

    static let form: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]

    static func post(_ client: some TestClientProtocol, _ pairs: [(String, String)], to path: String = "/oauth/token", headers: HTTPFields = form) async throws -> TestResponse {
        try await client.execute(uri: path, method: .post, headers: headers, body: .init(string: OAuthParameters.encode(pairs))) { $0 }
    }

    static func auth(_ client: some TestClientProtocol, token: String, uri: String = "/ffmpeg/mcp") async throws -> TestResponse {
        try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: uri, extra: [("Authorization", "Bearer \(token)")])) { $0 }
    }

    static func publicClient(_ store: TokenStore, name: String = "claude") throws -> OAuthClient {
        try store.registerClient(ClientRegistration(
            name: name, redirectURIs: [redirect], grantTypes: ["authorization_code", "refresh_token"], authMethod: "none", scope: nil)).client
    }

    /// A code for alice, as the consent page would create it, bound to the RFC 7636 verifier.
    static func code(_ store: TokenStore, client: OAuthClient) throws -> String {
        try store.createAuthorization(
            clientID: client.id, subject: "alice", scope: ["ffmpeg"], resource: resource, redirectURI: redirect,
            codeChallenge: PKCE.challenge(for: verifier), codeLifetime: 60, grantLifetime: 3600)
    }

    static func exchange(_ code: String, client: OAuthClient, verifier: String = verifier, redirect: String = redirect) -> [(String, String)] {
        [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect), ("code_verifier", verifier), ("client_id", client.id)]
    }

    // MARK: Authorization code

    @Test("a code with its PKCE verifier is exchanged for an access token that passes /auth and a refresh token")
    func codeExchange() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let client = try Self.publicClient(fixture.store)
        let code = try Self.code(fixture.store, client: client)
        try await fixture.withLiveServer { http in
            let response = try await Self.post(http, Self.exchange(code, client: client))
            #expect(response.status == .ok)
            #expect(response.header("Cache-Control") == "no-store")
            #expect(response.json["token_type"] as? String == "Bearer")
            #expect(response.json["expires_in"] as? Int == 600)
            #expect(response.json["scope"] as? String == "ffmpeg")
            #expect((response.json["refresh_token"] as? String)?.hasPrefix(OpaqueTokenPrefix.refreshToken) == true)
            let token = try #require(response.json["access_token"] as? String)
            let allowed = try await Self.auth(http, token: token)
            #expect(allowed.status == .ok)
            #expect(allowed.header("X-Auth-Subject") == "alice")
            #expect(allowed.header("X-Auth-Client") == client.id)
        }
    }

    @Test("a code exchanged a second time is invalid_grant and ends the tokens of the first exchange")
    func codeReplay() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let client = try Self.publicClient(fixture.store)
        let code = try Self.code(fixture.store, client: client)
        try await fixture.withLiveServer { http in
            let first = try await Self.post(http, Self.exchange(code, client: client))
            let token = try #require(first.json["access_token"] as? String)
            let refresh = try #require(first.json["refresh_token"] as? String)
            #expect(try await Self.auth(http, token: token).status == .ok)

            let second = try await Self.post(http, Self.exchange(code, client: client))
            #expect(second.status == .badRequest)
            #expect(second.json["error"] as? String == "invalid_grant")
            #expect(second.json["access_token"] == nil)
            #expect(try await Self.auth(http, token: token).status == .unauthorized)
            let refreshed = try await Self.post(http, [("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", client.id)])
            #expect(refreshed.json["error"] as? String == "invalid_grant")
        }
    }

    /// Ways an exchange can be wrong; each is refused and spends the code.
    enum BadExchange: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case wrongVerifier, shortVerifier, missingVerifier, otherRedirect, otherClient
        var testDescription: String { rawValue }
    }

    @Test("an exchange with the wrong verifier, redirect URI or client is invalid_grant, and the code is spent", arguments: BadExchange.allCases)
    func badExchange(_ bad: BadExchange) async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let client = try Self.publicClient(fixture.store)
        let other = try Self.publicClient(fixture.store, name: "other")
        let code = try Self.code(fixture.store, client: client)
        let pairs: [(String, String)] = switch bad {
        case .wrongVerifier: Self.exchange(code, client: client, verifier: String(Self.verifier.reversed()))
        case .shortVerifier: Self.exchange(code, client: client, verifier: String(Self.verifier.prefix(42)))
        case .missingVerifier: Self.exchange(code, client: client).filter { $0.0 != "code_verifier" }
        case .otherRedirect: Self.exchange(code, client: client, redirect: "http://127.0.0.1:9999/cb")
        case .otherClient: Self.exchange(code, client: other)
        }
        try await fixture.withLiveServer { http in
            let refused = try await Self.post(http, pairs)
            #expect(refused.status == .badRequest)
            #expect(refused.json["error"] as? String == (bad == .missingVerifier ? "invalid_request" : "invalid_grant"))
            #expect(refused.json["access_token"] == nil)
            let retry = try await Self.post(http, Self.exchange(code, client: client))
            if bad == .missingVerifier {
                // A request missing a parameter never reaches the code: it stays usable.
                #expect(retry.status == .ok)
            } else {
                #expect(retry.json["error"] as? String == "invalid_grant")
            }
        }
    }

    @Test("a parameter given twice is invalid_request and does not spend the code")
    func repeatedParameter() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let client = try Self.publicClient(fixture.store)
        let code = try Self.code(fixture.store, client: client)
        try await fixture.withLiveServer { http in
            let refused = try await Self.post(http, Self.exchange(code, client: client) + [("redirect_uri", "https://evil.example/cb")])
            #expect(refused.status == .badRequest)
            #expect(refused.json["error"] as? String == "invalid_request")
            #expect(try await Self.post(http, Self.exchange(code, client: client)).status == .ok)
        }
    }

    @Test("a token request that is not form-encoded is invalid_request")
    func tokenRequestMustBeAForm() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        try await fixture.withLiveServer { http in
            let response = try await Self.post(http, [("grant_type", "client_credentials")], headers: [.contentType: "application/json"])
            #expect(response.status == .badRequest)
            #expect(response.json["error"] as? String == "invalid_request")
        }
    }

    // MARK: Refresh tokens

    @Test("a refresh token is rotated; replaying the old one ends the family, newest refresh and access tokens included")
    func refreshRotationOverHTTP() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let client = try Self.publicClient(fixture.store)
        let code = try Self.code(fixture.store, client: client)
        try await fixture.withLiveServer { http in
            let first = try #require(try await Self.post(http, Self.exchange(code, client: client)).json["refresh_token"] as? String)
            let rotated = try await Self.post(http, [("grant_type", "refresh_token"), ("refresh_token", first), ("client_id", client.id)])
            #expect(rotated.status == .ok)
            let second = try #require(rotated.json["refresh_token"] as? String)
            let access = try #require(rotated.json["access_token"] as? String)
            #expect(second != first)
            #expect(try await Self.auth(http, token: access).status == .ok)

            let replay = try await Self.post(http, [("grant_type", "refresh_token"), ("refresh_token", first), ("client_id", client.id)])
            #expect(replay.status == .badRequest)
            #expect(replay.json["error"] as? String == "invalid_grant")
            let newest = try await Self.post(http, [("grant_type", "refresh_token"), ("refresh_token", second), ("client_id", client.id)])
            #expect(newest.json["error"] as? String == "invalid_grant")
            #expect(try await Self.auth(http, token: access).status == .unauthorized)
        }
    }

    @Test("a refresh request asking for a scope that was not granted is invalid_scope and does not spend the token")
    func refreshCannotWidenScope() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let client = try Self.publicClient(fixture.store)
        let code = try Self.code(fixture.store, client: client)
        try await fixture.withLiveServer { http in
            let refresh = try #require(try await Self.post(http, Self.exchange(code, client: client)).json["refresh_token"] as? String)
            let widened = try await Self.post(http, [("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", client.id), ("scope", "ffmpeg admin")])
            #expect(widened.json["error"] as? String == "invalid_scope")
            let plain = try await Self.post(http, [("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", client.id)])
            #expect(plain.status == .ok)
        }
    }

    // MARK: Client credentials

    @Test("a self-registered confidential client gets no client-credentials token; an operator-made machine client gets one for its subject")
    func clientCredentials() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (registered, registeredSecret) = try fixture.store.registerClient(ClientRegistration(
            name: "batch", redirectURIs: [], grantTypes: ["client_credentials"], authMethod: "client_secret_basic", scope: nil))
        let (machine, secret) = try fixture.store.addMachineClient(MachineClientRequest(
            name: "batch", grantTypes: ["client_credentials"], subject: "batch-runner", scopes: ["ffmpeg"], resources: [Self.resource],
            mayIntrospect: false))
        try await fixture.withLiveServer { http in
            var headers = Self.form
            headers[.authorization] = "Basic " + Data("\(registered.id):\(try #require(registeredSecret))".utf8).base64EncodedString()
            let refused = try await Self.post(http, [("grant_type", "client_credentials"), ("resource", Self.resource)], headers: headers)
            #expect(refused.status == .badRequest)
            #expect(refused.json["error"] as? String == "unauthorized_client")
            #expect(refused.json["access_token"] == nil)

            headers[.authorization] = "Basic " + Data("\(machine.id):\(secret)".utf8).base64EncodedString()
            let response = try await Self.post(http, [("grant_type", "client_credentials"), ("resource", Self.resource)], headers: headers)
            #expect(response.status == .ok)
            #expect(response.json["refresh_token"] == nil)
            let token = try #require(response.json["access_token"] as? String)
            let allowed = try await Self.auth(http, token: token)
            #expect(allowed.status == .ok)
            #expect(allowed.header("X-Auth-Subject") == "batch-runner")
            #expect(allowed.header("X-Auth-Client") == machine.id)
        }
    }

    @Test("a wrong client secret is invalid_client with a Basic challenge")
    func wrongClientSecret() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (client, _) = try fixture.store.registerClient(ClientRegistration(
            name: "batch", redirectURIs: [], grantTypes: ["client_credentials"], authMethod: "client_secret_basic", scope: nil))
        try await fixture.withLiveServer { http in
            var headers = Self.form
            headers[.authorization] = "Basic " + Data("\(client.id):agcs_wrong".utf8).base64EncodedString()
            let response = try await Self.post(http, [("grant_type", "client_credentials"), ("resource", Self.resource)], headers: headers)
            #expect(response.status == .unauthorized)
            #expect(response.json["error"] as? String == "invalid_client")
            #expect(response.header("WWW-Authenticate")?.hasPrefix("Basic") == true)
        }
    }

    // MARK: Revocation

    @Test("revoking a refresh token at /oauth/revoke ends its grant, access tokens included")
    func revocationEndsTheGrant() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let client = try Self.publicClient(fixture.store)
        let code = try Self.code(fixture.store, client: client)
        try await fixture.withLiveServer { http in
            let tokens = try await Self.post(http, Self.exchange(code, client: client)).json
            let access = try #require(tokens["access_token"] as? String)
            let refresh = try #require(tokens["refresh_token"] as? String)
            let revoked = try await Self.post(http, [("token", refresh), ("client_id", client.id)], to: "/oauth/revoke")
            #expect(revoked.status == .ok)
            #expect(try await Self.auth(http, token: access).status == .unauthorized)
        }
    }

    @Test("another client cannot revoke a client's token, and is answered 200 all the same")
    func revocationByAnotherClient() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let client = try Self.publicClient(fixture.store)
        let other = try Self.publicClient(fixture.store, name: "other")
        let code = try Self.code(fixture.store, client: client)
        try await fixture.withLiveServer { http in
            let access = try #require(try await Self.post(http, Self.exchange(code, client: client)).json["access_token"] as? String)
            let revoked = try await Self.post(http, [("token", access), ("client_id", other.id)], to: "/oauth/revoke")
            #expect(revoked.status == .ok)
            #expect(try await Self.auth(http, token: access).status == .ok)
        }
    }

    // MARK: Registration (RFC 7591)

    static func register(_ http: some TestClientProtocol, _ body: String, bearer: String? = nil) async throws -> TestResponse {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let bearer { headers[.authorization] = "Bearer \(bearer)" }
        return try await http.execute(uri: "/oauth/register", method: .post, headers: headers, body: .init(string: body)) { $0 }
    }

    static let publicRegistration = #"{"client_name":"Inspector","redirect_uris":["http://localhost:6274/oauth/callback"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"]}"#

    @Test("open registration stores a public client and gives it no secret")
    func openRegistration() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        try await fixture.withLiveServer { http in
            let response = try await Self.register(http, Self.publicRegistration)
            #expect(response.status == .created)
            #expect(response.json["client_secret"] == nil)
            #expect(response.json["token_endpoint_auth_method"] as? String == "none")
            let id = try #require(response.json["client_id"] as? String)
            let stored = try #require(try fixture.store.client(id: id))
            #expect(stored.redirectURIs == ["http://localhost:6274/oauth/callback"])
            #expect(stored.source == .registered)
        }
    }

    @Test("registration refuses redirect URIs the rules refuse", arguments: [
        "http://app.example.com/cb", "javascript:alert(1)", "https://app.example.com/cb#x",
    ])
    func registrationRefusesBadRedirects(_ uri: String) async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        try await fixture.withLiveServer { http in
            let body = #"{"redirect_uris":[""# + uri + #""],"token_endpoint_auth_method":"none"}"#
            let response = try await Self.register(http, body)
            #expect(response.status == .badRequest)
            #expect(response.json["error"] as? String == "invalid_redirect_uri")
            #expect(try fixture.store.listClients().isEmpty)
        }
    }

    static func registrationPolicy(_ mode: String) -> String {
        testPolicy(
            issuers: "issuers:\n  builtin: { kind: builtin, \(mode) }",
            routes: "  - name: ffmpeg\n    match: { host: mcp.example.com, path: \"/ffmpeg/**\" }\n    accept: [jwt]\n    require: { scopes: [ffmpeg] }\n")
    }

    @Test("registration: token needs the initial access token as a bearer token", arguments: [
        (nil, 401), ("wrong", 401), ("reg-s3cret", 201),
    ] as [(String?, Int)])
    func tokenRegistration(_ testCase: (String?, Int)) async throws {
        let fixture = try GatewayFixture(
            policy: Self.registrationPolicy("registration: token, registration_token_env: REG_TOKEN"), environment: ["REG_TOKEN": "reg-s3cret"])
        try await fixture.withLiveServer { http in
            let response = try await Self.register(http, Self.publicRegistration, bearer: testCase.0)
            #expect(Int(response.status.code) == testCase.1)
            #expect(try fixture.store.listClients().count == (testCase.1 == 201 ? 1 : 0))
        }
    }

    @Test("registration: token with its variable unset lets nobody register")
    func tokenRegistrationWithoutToken() async throws {
        let fixture = try GatewayFixture(policy: Self.registrationPolicy("registration: token, registration_token_env: REG_TOKEN"))
        try await fixture.withLiveServer { http in
            let empty = try await Self.register(http, Self.publicRegistration, bearer: "")
            let guessed = try await Self.register(http, Self.publicRegistration, bearer: "anything")
            #expect(empty.status == .unauthorized)
            #expect(guessed.status == .unauthorized)
        }
    }

    @Test("registration: off answers 404 and the metadata names no registration endpoint")
    func registrationOff() async throws {
        let fixture = try GatewayFixture(policy: Self.registrationPolicy("registration: off"))
        try await fixture.withLiveServer { http in
            #expect(try await Self.register(http, Self.publicRegistration).status == .notFound)
            let metadata = try await http.execute(uri: "/.well-known/oauth-authorization-server", method: .get) { $0.json }
            #expect(metadata["issuer"] as? String == "https://mcp.example.com")
            #expect(metadata["registration_endpoint"] == nil)
        }
    }
}
