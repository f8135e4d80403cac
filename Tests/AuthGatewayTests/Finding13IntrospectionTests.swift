@testable import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import TokenStore

/// Issue 11 finding 13: `/oauth/introspect` tells a client about its own tokens only, unless an operator gave it
/// introspection rights (`authctl clients add NAME --introspect`).
@Suite("Finding 13: introspection answers about the asking client's own tokens")
struct Finding13IntrospectionTests {
    /// An access token and a refresh token for alice, issued to a public client.
    static func tokens(_ fixture: GatewayFixture, _ http: some TestClientProtocol) async throws -> (client: OAuthClient, access: String, refresh: String) {
        let client = try OAuthTokenEndpointTests.publicClient(fixture.store)
        let code = try OAuthTokenEndpointTests.code(fixture.store, client: client)
        let answer = try await OAuthTokenEndpointTests.post(http, OAuthTokenEndpointTests.exchange(code, client: client)).json
        return (client, try #require(answer["access_token"] as? String), try #require(answer["refresh_token"] as? String))
    }

    static func introspect(_ http: some TestClientProtocol, _ token: String, as id: String, secret: String) async throws -> [String: Any] {
        var headers = OAuthTokenEndpointTests.form
        headers[.authorization] = Finding1MachineClientTests.basic(id, secret)
        return try await OAuthTokenEndpointTests.post(http, [("token", token)], to: "/oauth/introspect", headers: headers).json
    }

    static func confidentialClient(_ store: TokenStore) throws -> (OAuthClient, String) {
        let (client, secret) = try store.registerClient(ClientRegistration(
            name: "web app", redirectURIs: [OAuthTokenEndpointTests.redirect], grantTypes: ["authorization_code"],
            authMethod: "client_secret_basic", scope: nil))
        return (client, try #require(secret))
    }

    @Test("finding 13: a confidential client asking about another client's tokens is told active: false")
    func otherClientsTokens() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (asker, secret) = try Self.confidentialClient(fixture.store)
        try await fixture.withLiveServer { http in
            let (_, access, refresh) = try await Self.tokens(fixture, http)
            for token in [access, refresh] {
                let answer = try await Self.introspect(http, token, as: asker.id, secret: secret)
                #expect(answer["active"] as? Bool == false)
                #expect(answer["sub"] == nil)
            }
        }
    }

    @Test("finding 13: a client made with authctl clients add --introspect is told about any token")
    func introspectionRights() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (server, secret) = try fixture.store.addMachineClient(MachineClientRequest(
            name: "resource server", grantTypes: [], subject: nil, scopes: [], resources: [], mayIntrospect: true))
        try await fixture.withLiveServer { http in
            let (client, access, _) = try await Self.tokens(fixture, http)
            let answer = try await Self.introspect(http, access, as: server.id, secret: secret)
            #expect(answer["active"] as? Bool == true)
            #expect(answer["sub"] as? String == "alice")
            #expect(answer["client_id"] as? String == client.id)
        }
    }

    @Test("finding 13: a confidential client is told about its own tokens")
    func ownTokens() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (machine, secret) = try Finding1MachineClientTests.machine(fixture.store)
        try await fixture.withLiveServer { http in
            let token = try #require(try await Finding1MachineClientTests.tokenRequest(
                http, [("grant_type", "client_credentials")], basic: Finding1MachineClientTests.basic(machine.id, secret)).json["access_token"] as? String)
            let answer = try await Self.introspect(http, token, as: machine.id, secret: secret)
            #expect(answer["active"] as? Bool == true)
            #expect(answer["sub"] as? String == "ci-bot")
        }
    }
}
