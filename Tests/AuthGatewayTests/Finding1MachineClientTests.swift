@testable import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import TokenStore

/// Issue 11 finding 1: nobody gets a client-credentials token unless an operator made the client with `authctl`.
@Suite("Finding 1: client_credentials only for operator-made machine clients")
struct Finding1MachineClientTests {
    static let resource = OAuthTokenEndpointTests.resource

    static func basic(_ id: String, _ secret: String) -> String {
        "Basic " + Data("\(id):\(secret)".utf8).base64EncodedString()
    }

    static func tokenRequest(_ http: some TestClientProtocol, _ pairs: [(String, String)], basic: String) async throws -> TestResponse {
        var headers = OAuthTokenEndpointTests.form
        headers[.authorization] = basic
        return try await OAuthTokenEndpointTests.post(http, pairs, headers: headers)
    }

    @Test("finding 1: open registration refuses grant_types client_credentials with invalid_client_metadata", arguments: [
        #"{"client_name":"x","grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_basic"}"#,
        #"{"client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"grant_types":["authorization_code","client_credentials"],"token_endpoint_auth_method":"client_secret_post"}"#,
    ])
    func openRegistrationRefusesClientCredentials(_ body: String) async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        try await fixture.withLiveServer { http in
            let response = try await OAuthTokenEndpointTests.register(http, body)
            #expect(response.status == .badRequest)
            #expect(response.json["error"] as? String == "invalid_client_metadata")
            #expect(try fixture.store.listClients().isEmpty)
        }
    }

    @Test("finding 1: token-gated registration refuses client_credentials too")
    func tokenRegistrationRefusesClientCredentials() async throws {
        let fixture = try GatewayFixture(
            policy: OAuthTokenEndpointTests.registrationPolicy("registration: token, registration_token_env: REG_TOKEN"),
            environment: ["REG_TOKEN": "reg-s3cret"])
        try await fixture.withLiveServer { http in
            let response = try await OAuthTokenEndpointTests.register(
                http, #"{"grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_basic"}"#, bearer: "reg-s3cret")
            #expect(response.status == .badRequest)
            #expect(response.json["error"] as? String == "invalid_client_metadata")
        }
    }

    @Test("finding 1: a self-registered client stored with client_credentials (before the fix) gets no token")
    func selfRegisteredClientGetsNoToken() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (client, secret) = try fixture.store.registerClient(ClientRegistration(
            name: "batch", redirectURIs: [], grantTypes: ["client_credentials"], authMethod: "client_secret_basic", scope: nil))
        try await fixture.withLiveServer { http in
            let response = try await Self.tokenRequest(
                http, [("grant_type", "client_credentials"), ("resource", Self.resource)], basic: Self.basic(client.id, try #require(secret)))
            #expect(response.status == .badRequest)
            #expect(response.json["error"] as? String == "unauthorized_client")
            #expect(response.json["access_token"] == nil)
        }
    }
}

/// Machine clients made by an operator: what their tokens carry and where they stop.
extension Finding1MachineClientTests {
    static let memory = "https://mcp.example.com/memory"

    static func machine(_ store: TokenStore, scopes: [String] = ["ffmpeg"], resources: [String] = [resource]) throws -> (OAuthClient, String) {
        try store.addMachineClient(MachineClientRequest(
            name: "ci", grantTypes: ["client_credentials"], subject: "ci-bot", scopes: scopes, resources: resources, mayIntrospect: false))
    }

    @Test("finding 1: mcp-proxy style (HTTP Basic, no resource) gets a working token for a single-resource machine client")
    func mcpProxyStyle() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (client, secret) = try Self.machine(fixture.store)
        try await fixture.withLiveServer { http in
            let response = try await Self.tokenRequest(http, [("grant_type", "client_credentials")], basic: Self.basic(client.id, secret))
            #expect(response.status == .ok)
            #expect(response.json["scope"] as? String == "ffmpeg")
            let token = try #require(response.json["access_token"] as? String)
            let allowed = try await OAuthTokenEndpointTests.auth(http, token: token)
            #expect(allowed.status == .ok)
            #expect(allowed.header("X-Auth-Subject") == "ci-bot")
            // The token is for its one resource only.
            #expect(try await OAuthTokenEndpointTests.auth(http, token: token, uri: "/memory/x").status == .unauthorized)
        }
    }

    @Test("finding 1: the secret in the form body (client_secret_post) works for a machine client too")
    func formSecret() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (client, secret) = try Self.machine(fixture.store)
        try await fixture.withLiveServer { http in
            let response = try await OAuthTokenEndpointTests.post(
                http, [("grant_type", "client_credentials"), ("client_id", client.id), ("client_secret", secret)])
            #expect(response.status == .ok)
        }
    }

    @Test("finding 1: a machine client with several resources must name one; a resource not its own is invalid_target")
    func resources() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (several, severalSecret) = try Self.machine(fixture.store, resources: [Self.resource, Self.memory])
        let (single, singleSecret) = try Self.machine(fixture.store)
        try await fixture.withLiveServer { http in
            let unnamed = try await Self.tokenRequest(http, [("grant_type", "client_credentials")], basic: Self.basic(several.id, severalSecret))
            #expect(unnamed.status == .badRequest)
            #expect(unnamed.json["error"] as? String == "invalid_target")
            let named = try await Self.tokenRequest(
                http, [("grant_type", "client_credentials"), ("resource", Self.memory)], basic: Self.basic(several.id, severalSecret))
            #expect(named.status == .ok)
            let other = try await Self.tokenRequest(
                http, [("grant_type", "client_credentials"), ("resource", Self.memory)], basic: Self.basic(single.id, singleSecret))
            #expect(other.status == .badRequest)
            #expect(other.json["error"] as? String == "invalid_target")
        }
    }

    @Test("finding 1: a machine client's token carries at most its scopes")
    func scopes() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (client, secret) = try Self.machine(fixture.store, scopes: ["memory-only"])
        try await fixture.withLiveServer { http in
            let asked = try await Self.tokenRequest(
                http, [("grant_type", "client_credentials"), ("scope", "ffmpeg")], basic: Self.basic(client.id, secret))
            #expect(asked.status == .badRequest)
            #expect(asked.json["error"] as? String == "invalid_scope")
            let plain = try await Self.tokenRequest(http, [("grant_type", "client_credentials")], basic: Self.basic(client.id, secret))
            #expect(plain.json["scope"] as? String == "")
            let token = try #require(plain.json["access_token"] as? String)
            // ffmpeg requires the ffmpeg scope, which this client was never given.
            #expect(try await OAuthTokenEndpointTests.auth(http, token: token).status == .forbidden)
        }
    }

    @Test("finding 1: revoking a machine client ends its tokens at the next /auth decision")
    func revocation() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (client, secret) = try Self.machine(fixture.store)
        try await fixture.withLiveServer { http in
            let token = try #require(
                try await Self.tokenRequest(http, [("grant_type", "client_credentials")], basic: Self.basic(client.id, secret)).json["access_token"] as? String)
            #expect(try await OAuthTokenEndpointTests.auth(http, token: token).status == .ok)
            try fixture.store.revokeClient(id: client.id)
            #expect(try await OAuthTokenEndpointTests.auth(http, token: token).status == .unauthorized)
            let again = try await Self.tokenRequest(http, [("grant_type", "client_credentials")], basic: Self.basic(client.id, secret))
            #expect(again.status == .unauthorized)
        }
    }
}
