@testable import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import TokenStore

/// Issue 11, finding G (sign-in part): the consent ticket survives a request that fails the CSRF check, the CSRF
/// token must be one the gateway made, and a token request with the wrong `resource` does not spend the code.
@Suite("Finding G: sign-in forms and code exchange")
struct FindingGSignInFormTests {
    static let resource = "https://mcp.example.com/ffmpeg"

    /// Replaces (or adds) a form field.
    static func with(_ fields: [(String, String)], _ name: String, _ value: String) -> [(String, String)] {
        fields.filter { $0.0 != name } + [(name, value)]
    }

    @Test("finding G: a consent ticket posted with another browser's CSRF token is refused and not spent")
    func consentTicketSurvivesForeignCSRF() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (key, _) = try fixture.issueKey(subject: "carol", scopes: ["ffmpeg"])
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: Self.resource)
        try await fixture.withLiveServer { http in
            let victim = try await flow.open(http)
            let login = try await SignInFlow.post(http, cookie: victim.cookie, victim.fields + [("api_key", key)])
            #expect(login.status == .ok)
            let consent = SignInFlow.hiddenFields(of: "consent", in: login.bodyText)
            let ticket = try #require(consent.first { $0.0 == "consent_ticket" }?.1)

            // Someone who learned the ticket, with a CSRF token of their own that the gateway really made.
            let attacker = try await flow.open(http)
            let attackerCSRF = try #require(attacker.fields.first { $0.0 == "csrf_token" }?.1)
            let spoiled = try await SignInFlow.post(
                http, cookie: attacker.cookie, [("consent_ticket", ticket), ("csrf_token", attackerCSRF), ("decision", "deny")])
            #expect(spoiled.status != .seeOther)
            #expect(spoiled.header("Location") == nil)

            let allowed = try await SignInFlow.post(http, cookie: victim.cookie, consent + [("decision", "allow")])
            #expect(allowed.status == .seeOther)
            #expect(SignInFlow.code(of: allowed) != nil)
        }
    }

    @Test("finding G: a self-chosen CSRF value sent in both cookie and form is refused", arguments: [
        String(repeating: "a", count: 64), "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ])
    func selfChosenCSRFIsRefused(_ chosen: String) async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (key, _) = try fixture.issueKey(subject: "carol", scopes: ["ffmpeg"])
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: Self.resource)
        try await fixture.withLiveServer { http in
            let page = try await flow.open(http)
            let cookieName = try #require(page.cookie.split(separator: "=").first)
            let response = try await SignInFlow.post(
                http, cookie: "\(cookieName)=\(chosen)", Self.with(page.fields, "csrf_token", chosen) + [("api_key", key)])
            #expect(response.status == .forbidden)
        }
    }

    @Test("finding G: a gateway-made CSRF token whose MAC was altered is refused")
    func alteredCSRFIsRefused() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (key, _) = try fixture.issueKey(subject: "carol", scopes: ["ffmpeg"])
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: Self.resource)
        try await fixture.withLiveServer { http in
            let page = try await flow.open(http)
            let real = try #require(page.fields.first { $0.0 == "csrf_token" }?.1)
            let altered = String(real.dropLast()) + (real.hasSuffix("0") ? "1" : "0")
            let cookieName = try #require(page.cookie.split(separator: "=").first)
            let response = try await SignInFlow.post(
                http, cookie: "\(cookieName)=\(altered)", Self.with(page.fields, "csrf_token", altered) + [("api_key", key)])
            #expect(response.status == .forbidden)
            // The real one still works.
            let good = try await SignInFlow.post(http, cookie: page.cookie, page.fields + [("api_key", key)])
            #expect(good.status == .ok)
        }
    }

    @Test("finding G: a token request with a resource other than the authorized one is invalid_target and does not spend the code")
    func mismatchedResourceKeepsTheCode() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let client = try OAuthTokenEndpointTests.publicClient(fixture.store)
        let code = try OAuthTokenEndpointTests.code(fixture.store, client: client)
        try await fixture.withLiveServer { http in
            let wrong = try await OAuthTokenEndpointTests.post(
                http, OAuthTokenEndpointTests.exchange(code, client: client) + [("resource", "https://mcp.example.com/memory")])
            #expect(wrong.json["error"] as? String == "invalid_target")
            let right = try await OAuthTokenEndpointTests.post(http, OAuthTokenEndpointTests.exchange(code, client: client))
            #expect(right.status == .ok)
            #expect(right.json["access_token"] is String)
        }
    }
}
