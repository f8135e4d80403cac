@testable import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import TokenStore

/// Drives `/oauth/authorize` over HTTP the way a browser does (login page with its CSRF cookie, login form, consent
/// form, redirect with the code), then exchanges the code at `/oauth/token`.
struct SignInFlow {
    static let redirect = "http://127.0.0.1/cb"
    static let verifier = OAuthRulesTests.rfcVerifier

    let client: OAuthClient
    var resource: String
    var scope: String?

    /// A public client registered in `store` for the authorization-code and refresh grants.
    static func registerClient(_ store: TokenStore, name: String = "claude") throws -> OAuthClient {
        try store.registerClient(ClientRegistration(
            name: name, redirectURIs: [redirect], grantTypes: ["authorization_code", "refresh_token"], authMethod: "none", scope: nil)).client
    }

    /// The authorization request's query.
    var query: [(String, String)] {
        var pairs = [
            ("response_type", "code"), ("client_id", client.id), ("redirect_uri", Self.redirect), ("code_challenge", PKCE.challenge(for: Self.verifier)),
            ("code_challenge_method", "S256"), ("resource", resource), ("state", "st"),
        ]
        if let scope { pairs.append(("scope", scope)) }
        return pairs
    }

    /// What the login page gave the browser: its cookie (`name=value`) and the login form's hidden fields.
    struct LoginPage {
        let response: TestResponse
        let cookie: String
        let fields: [(String, String)]
    }

    func open(_ http: some TestClientProtocol) async throws -> LoginPage {
        let response = try await http.execute(uri: "/oauth/authorize?" + OAuthParameters.encode(query), method: .get) { $0 }
        let cookie = response.header("Set-Cookie").map { String($0.split(separator: ";")[0]) } ?? ""
        return LoginPage(response: response, cookie: cookie, fields: Self.hiddenFields(of: "login", in: response.bodyText))
    }

    static func post(_ http: some TestClientProtocol, cookie: String?, _ fields: [(String, String)]) async throws -> TestResponse {
        var headers: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]
        if let cookie { headers[.cookie] = cookie }
        return try await http.execute(uri: "/oauth/authorize", method: .post, headers: headers, body: .init(string: OAuthParameters.encode(fields))) { $0 }
    }

    /// Signs in with `credentials` (user name and password, or `api_key`) and answers the consent page with
    /// `decision`: the final response (a redirect on success).
    func signIn(_ http: some TestClientProtocol, _ credentials: [(String, String)], decision: String = "allow") async throws -> TestResponse {
        let page = try await open(http)
        let login = try await Self.post(http, cookie: page.cookie, page.fields + credentials)
        guard login.status == .ok else { return login }
        let consent = Self.hiddenFields(of: "consent", in: login.bodyText)
        return try await Self.post(http, cookie: page.cookie, consent + [("decision", decision)])
    }

    /// The code of a successful sign-in's redirect, or nil.
    static func code(of response: TestResponse) -> String? {
        guard let location = response.header("Location"), let items = URLComponents(string: location)?.queryItems else { return nil }
        return items.first { $0.name == "code" }?.value
    }

    /// Exchanges a code for tokens: the token endpoint's JSON answer.
    func exchange(_ http: some TestClientProtocol, code: String) async throws -> TestResponse {
        try await OAuthTokenEndpointTests.post(http, [
            ("grant_type", "authorization_code"), ("code", code), ("redirect_uri", Self.redirect), ("code_verifier", Self.verifier),
            ("client_id", client.id),
        ])
    }

    /// Signs in and exchanges the code: the token endpoint's answer (fails the test when there is no code).
    func tokens(_ http: some TestClientProtocol, _ credentials: [(String, String)]) async throws -> TestResponse {
        let final = try await signIn(http, credentials)
        guard let code = Self.code(of: final) else { throw OAuthStoreTests.Unexpected("sign-in gave no code: \(final.status) \(final.bodyText)") }
        return try await exchange(http, code: code)
    }

    func refresh(_ http: some TestClientProtocol, _ refreshToken: String) async throws -> TestResponse {
        try await OAuthTokenEndpointTests.post(http, [("grant_type", "refresh_token"), ("refresh_token", refreshToken), ("client_id", client.id)])
    }

    /// The hidden fields of the form with `id` in an HTML page, unescaped.
    static func hiddenFields(of id: String, in html: String) -> [(String, String)] {
        guard let start = html.range(of: "<form id=\"\(id)\"") else { return [] }
        let rest = html[start.upperBound...]
        let body = rest.range(of: "</form>").map { rest[..<$0.lowerBound] } ?? rest
        return body.matches(of: /<input type="hidden" name="([^"]*)" value="([^"]*)">/).map { (unescape(String($0.1)), unescape(String($0.2))) }
    }

    /// The visible text of the consent page's scope list.
    static func listedScopes(in html: String) -> [String] {
        html.matches(of: /<li><code>([^<]*)<\/code><\/li>/).map { unescape(String($0.1)) }
    }

    static func unescape(_ text: String) -> String {
        text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">").replacingOccurrences(of: "&quot;", with: "\"")
            .replacingOccurrences(of: "&#39;", with: "'").replacingOccurrences(of: "&amp;", with: "&")
    }
}
