@testable import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import TokenStore

/// Issue 11, finding 9: `/oauth/authorize` is no open redirector. Anyone may register a client with any redirect
/// URI, so a request that fails before the user has signed in and decided (`response_type=token`, no PKCE, an
/// unknown resource or scope) is answered with an error page, never sent to that URI (RFC 9700 §4.11.2).
@Suite("Finding 9: authorization request errors are shown, not redirected")
struct Finding9AuthorizeErrorPageTests {
    static let resource = "https://mcp.example.com/ffmpeg"

    /// A valid request's parameters with some replaced (nil: removed).
    static func request(_ client: OAuthClient, _ overrides: [String: String?]) -> [(String, String)] {
        let base = SignInFlow(client: client, resource: resource).query
        var pairs = base.filter { overrides[$0.0] == nil }
        for (name, value) in overrides { if let value = value { pairs.append((name, value)) } }
        return pairs
    }

    static let malformed: [[String: String?]] = [
        ["response_type": "token"],
        ["code_challenge": nil],
        ["code_challenge_method": "plain"],
        ["resource": nil],
        ["resource": "https://mcp.example.com/elsewhere"],
        ["scope": "ffmpeg no_such_scope"],
    ]

    @Test("finding 9: a malformed authorization request from a known client and redirect URI gets an error page, not a redirect", arguments: malformed)
    func malformedRequestShowsPage(_ overrides: [String: String?]) async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let client = try SignInFlow.registerClient(fixture.store)
        try await fixture.withLiveServer { http in
            let response = try await http.execute(uri: "/oauth/authorize?" + OAuthParameters.encode(Self.request(client, overrides)), method: .get) { $0 }
            #expect(response.status == .badRequest)
            #expect(response.header("Location") == nil)
            #expect(response.header("Content-Type")?.hasPrefix("text/html") == true)
        }
    }

    @Test("finding 9: a malformed request posted with the login form gets an error page, not a redirect")
    func malformedLoginPostShowsPage() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let client = try SignInFlow.registerClient(fixture.store)
        let (key, _) = try fixture.issueKey(subject: "carol", scopes: ["ffmpeg"])
        try await fixture.withLiveServer { http in
            let page = try await SignInFlow(client: client, resource: Self.resource).open(http)
            let fields = FindingGSignInFormTests.with(page.fields, "response_type", "token") + [("api_key", key)]
            let response = try await SignInFlow.post(http, cookie: page.cookie, fields)
            #expect(response.status == .badRequest)
            #expect(response.header("Location") == nil)
        }
    }

    @Test("finding 9: a user who denies consent is still sent back to the client with access_denied")
    func denialStillRedirects() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let (key, _) = try fixture.issueKey(subject: "carol", scopes: ["ffmpeg"])
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: Self.resource)
        try await fixture.withLiveServer { http in
            let final = try await flow.signIn(http, [("api_key", key)], decision: "deny")
            #expect(final.status == .seeOther)
            #expect(final.header("Location")?.hasPrefix(SignInFlow.redirect + "?error=access_denied") == true)
        }
    }
}
