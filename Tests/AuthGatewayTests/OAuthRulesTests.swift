@testable import AuthGateway
import Foundation
import Testing

/// The pure rules of the built-in authorization server: PKCE, redirect URIs, form parameters, client credentials
/// and which client metadata documents may be fetched and believed.
@Suite("OAuth rules")
struct OAuthRulesTests {
    // MARK: PKCE (RFC 7636)

    static let rfcVerifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    static let rfcChallenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

    @Test("the RFC 7636 appendix B verifier hashes to its S256 challenge")
    func pkceAppendixB() {
        #expect(PKCE.challenge(for: Self.rfcVerifier) == Self.rfcChallenge)
        #expect(PKCE.verify(verifier: Self.rfcVerifier, challenge: Self.rfcChallenge))
    }

    @Test("a verifier that does not hash to the challenge is refused")
    func pkceWrongVerifier() {
        #expect(!PKCE.verify(verifier: String(Self.rfcVerifier.reversed()), challenge: Self.rfcChallenge))
        #expect(!PKCE.verify(verifier: Self.rfcChallenge, challenge: Self.rfcChallenge))
    }

    @Test("a verifier outside 43–128 unreserved characters is refused even when it hashes to the challenge", arguments: [
        String(repeating: "a", count: 42), String(repeating: "a", count: 129), String(repeating: "a", count: 42) + "+",
        String(repeating: "a", count: 42) + " ", String(repeating: "a", count: 42) + "é", "",
    ])
    func pkceVerifierShape(_ verifier: String) {
        #expect(!PKCE.verify(verifier: verifier, challenge: PKCE.challenge(for: verifier)))
    }

    @Test("verifiers of 43 and 128 unreserved characters are accepted", arguments: [
        String(repeating: "a", count: 43), String(repeating: "Z9-._~", count: 21) + "ab",
    ])
    func pkceVerifierBounds(_ verifier: String) {
        #expect(PKCE.verify(verifier: verifier, challenge: PKCE.challenge(for: verifier)))
    }

    static let challengeShapes: [(String, Bool)] = {
        let short = String(rfcChallenge.dropLast())
        return [
            (rfcChallenge, true), (rfcVerifier, true), (short, false), (rfcChallenge + "A", false), (short + "=", false), (short + "+", false),
            (short + "/", false), ("", false), ("plain", false),
        ]
    }()

    @Test("a challenge must look like a base64url SHA-256 digest", arguments: challengeShapes)
    func pkceChallengeShape(_ testCase: (String, Bool)) {
        #expect(PKCE.isWellFormedChallenge(testCase.0) == testCase.1)
    }

    // MARK: Redirect URIs

    @Test("which redirect URIs a client may register", arguments: [
        ("https://app.example.com/callback", true),
        ("https://app.example.com/callback?x=1", true),
        ("http://127.0.0.1/callback", true),
        ("http://127.0.0.1:33418/callback", true),
        ("http://localhost:6274/oauth/callback", true),
        ("http://[::1]:8080/callback", true),
        ("cursor://anysphere.cursor-retrieval/oauth/callback", true),
        ("cursor://x", true),
        ("http://app.example.com/callback", false),
        ("http://10.0.0.5/callback", false),
        ("http://127.0.0.1.nip.io/callback", false),
        ("https://app.example.com/callback#frag", false),
        ("http://127.0.0.1/callback#frag", false),
        ("javascript:alert(1)", false),
        ("JavaScript:alert(1)", false),
        ("data:text/html;base64,PHNjcmlwdD4=", false),
        ("file:///etc/passwd", false),
        ("vbscript:msgbox", false),
        ("https:///callback", false),
        ("/relative/callback", false),
        ("", false),
        ("myapp://user:pass@callback", false),
    ])
    func redirectURIProblem(_ testCase: (String, Bool)) {
        let problem = RedirectURIRules.problem(testCase.0)
        #expect((problem == nil) == testCase.1, "\(testCase.0): \(problem ?? "accepted")")
    }

    @Test("a requested redirect URI matches a registered one exactly, except a loopback http port", arguments: [
        ("https://app.example.com/cb", ["https://app.example.com/cb"], true),
        ("http://127.0.0.1:51234/cb", ["http://127.0.0.1/cb"], true),
        ("http://127.0.0.1:51234/cb", ["http://127.0.0.1:8080/cb"], true),
        ("http://localhost:9/cb", ["http://localhost:1/cb"], true),
        ("http://127.0.0.1:51234/other", ["http://127.0.0.1/cb"], false),
        ("http://localhost:51234/cb", ["http://127.0.0.1/cb"], false),
        ("https://app.example.com:8443/cb", ["https://app.example.com/cb"], false),
        ("https://app.example.com/cb/", ["https://app.example.com/cb"], false),
        ("https://app.example.com/cb2", ["https://app.example.com/cb"], false),
        ("https://app.example.com/cb?x=1", ["https://app.example.com/cb"], false),
        ("https://APP.example.com/cb", ["https://app.example.com/cb"], false),
        ("http://app.example.com:9/cb", ["http://app.example.com:8/cb"], false),
        ("https://app.example.com/cb", [], false),
    ])
    func redirectURIMatching(_ testCase: (String, [String], Bool)) {
        #expect(RedirectURIRules.matches(testCase.0, registered: testCase.1) == testCase.2)
    }

    // MARK: Form parameters

    @Test("form parameters decode + as a space, then percent escapes")
    func parameterDecoding() {
        let parameters = OAuthParameters(encoded: "scope=ffmpeg+memory&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&code=a%2Bb")
        #expect(parameters["scope"] == "ffmpeg memory")
        #expect(parameters["redirect_uri"] == "http://127.0.0.1:9/cb")
        #expect(parameters["code"] == "a+b")
        #expect(parameters.repeated.isEmpty)
    }

    @Test("a repeated parameter is recorded, whatever its values")
    func repeatedParameters() {
        #expect(OAuthParameters(encoded: "client_id=a&client_id=b").repeated == ["client_id"])
        #expect(OAuthParameters(encoded: "client_id=a&client_id=a").repeated == ["client_id"])
        #expect(OAuthParameters(encoded: "code=x&client%5Fid=a&client_id=b").repeated == ["client_id"])
        #expect(OAuthParameters(encoded: "a=1&b=2&&c=3").repeated.isEmpty)
    }

    @Test("an empty value is the same as an absent parameter", arguments: ["state=", "state", "other=1", ""])
    func emptyIsAbsent(_ encoded: String) {
        #expect(OAuthParameters(encoded: encoded)["state"] == nil)
    }

    @Test("encoding escapes everything outside the unreserved set and decodes back")
    func parameterEncodingRoundTrip() {
        let pairs = [("redirect_uri", "http://127.0.0.1:9/cb?x=1&y=2"), ("state", "a b+c/d=é")]
        let encoded = OAuthParameters.encode(pairs)
        #expect(!encoded.contains(" ") && !encoded.contains("+") && encoded.split(separator: "&").count == 2)
        let decoded = OAuthParameters(encoded: encoded)
        #expect(decoded["redirect_uri"] == pairs[0].1)
        #expect(decoded["state"] == pairs[1].1)
    }

    // MARK: Client authentication

    static func basic(_ text: String) -> String { "Basic " + Data(text.utf8).base64EncodedString() }

    @Test("HTTP Basic client credentials are URL-decoded after base64 (RFC 6749 §2.3.1)")
    func basicCredentials() throws {
        let plain = try #require(ClientAuthentication.basicCredentials(Self.basic("cli_1:agcs_secret")))
        #expect(plain == ("cli_1", "agcs_secret"))
        let encoded = try #require(ClientAuthentication.basicCredentials(Self.basic("my%20client:p%3Ass+word%25")))
        #expect(encoded == ("my client", "p:ss word%"))
        let lowercase = try #require(ClientAuthentication.basicCredentials("basic " + Data("a:b".utf8).base64EncodedString()))
        #expect(lowercase == ("a", "b"))
        let colonInSecret = try #require(ClientAuthentication.basicCredentials(Self.basic("a:b:c")))
        #expect(colonInSecret == ("a", "b:c"))
    }

    @Test("malformed Basic credentials give nothing", arguments: [
        "Bearer abc", "Basic ", "Basic !!!notbase64", basic("no-colon"), basic(":secret-without-id"), basic("bad%ZZ:secret"), "Basic",
    ])
    func malformedBasicCredentials(_ header: String) {
        #expect(ClientAuthentication.basicCredentials(header) == nil)
    }

    // MARK: Client ID metadata documents

    @Test("metadata documents are never fetched from non-public addresses", arguments: [
        ("127.0.0.1", false), ("127.1.2.3", false), ("0.0.0.0", false), ("10.1.2.3", false), ("172.16.0.1", false),
        ("172.31.255.255", false), ("192.168.1.1", false), ("169.254.169.254", false), ("100.64.0.1", false),
        ("224.0.0.1", false), ("::1", false), ("::", false), ("fc00::1", false), ("fd12:3456::1", false), ("fe80::1", false),
        ("::ffff:127.0.0.1", false), ("::ffff:10.0.0.1", false), ("::ffff:169.254.169.254", false), ("ff02::1", false), ("64:ff9b::a00:1", false),
        ("93.184.216.34", true), ("172.32.0.1", true), ("100.128.0.1", true), ("8.8.8.8", true), ("2606:4700::1", true),
        ("2001:4860:4860::8888", true),
    ])
    func publicAddresses(_ testCase: (String, Bool)) throws {
        let address = try #require(IPAddress(testCase.0))
        #expect(ClientMetadataDocumentFetcher.isPublic(address) == testCase.1)
    }

    @Test("an IP literal resolves to itself without a DNS lookup")
    func literalResolution() async throws {
        let resolver = HostResolver(threads: 1, timeout: .seconds(1), lookup: { _ in nil })
        #expect(try await resolver.resolve("169.254.169.254").map(\.description) == ["169.254.169.254"])
        #expect(try await resolver.resolve("::1").count == 1)
    }

    static let documentURL = "https://app.example.com/oauth/client.json"

    /// A metadata document for `documentURL`, with the fields of the JSON object `overrides` replacing its own (null removes one).
    static func document(_ overrides: String = "{}") -> Data {
        var object: [String: Any] = [
            "client_id": documentURL, "client_name": "Example App", "redirect_uris": ["https://app.example.com/callback", "http://127.0.0.1/cb"],
        ]
        let changes = try! JSONSerialization.jsonObject(with: Data(overrides.utf8)) as! [String: Any]
        for (key, value) in changes { object[key] = value is NSNull ? nil : value }
        return try! JSONSerialization.data(withJSONObject: object)
    }

    @Test("a valid metadata document describes a public client whose id is the document URL")
    func validMetadataDocument() throws {
        let now = Date()
        let client = try ClientMetadataDocumentFetcher.client(from: Self.document(#"{"scope": "ffmpeg"}"#), url: Self.documentURL, now: now)
        #expect(client.id == Self.documentURL)
        #expect(client.name == "Example App")
        #expect(client.redirectURIs == ["https://app.example.com/callback", "http://127.0.0.1/cb"])
        #expect(client.authMethod == "none")
        #expect(client.secretDigest == nil)
        #expect(client.grantTypes == ["authorization_code"])
        #expect(client.scope == "ffmpeg")
        #expect(client.source == .metadataDocument)
        #expect(client.revokedAt == nil)
        let refreshing = try ClientMetadataDocumentFetcher.client(
            from: Self.document(#"{"grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none"}"#),
            url: Self.documentURL, now: now)
        #expect(refreshing.grantTypes == ["authorization_code", "refresh_token"])
    }

    @Test("a metadata document is refused unless it names itself, has acceptable redirect URIs and is a public client", arguments: [
        ("client_id of another URL", #"{"client_id": "https://evil.example.com/client.json"}"#),
        ("client_id missing", #"{"client_id": null}"#),
        ("client_id with a trailing slash", #"{"client_id": "https://app.example.com/oauth/client.json/"}"#),
        ("no redirect_uris", #"{"redirect_uris": null}"#),
        ("empty redirect_uris", #"{"redirect_uris": []}"#),
        ("redirect_uris not a list", #"{"redirect_uris": "https://app.example.com/callback"}"#),
        ("plain http redirect", #"{"redirect_uris": ["http://app.example.com/callback"]}"#),
        ("javascript redirect", #"{"redirect_uris": ["javascript:alert(1)"]}"#),
        ("redirect with fragment", #"{"redirect_uris": ["https://app.example.com/cb#x"]}"#),
        ("client_secret_basic", #"{"token_endpoint_auth_method": "client_secret_basic"}"#),
        ("private_key_jwt", #"{"token_endpoint_auth_method": "private_key_jwt"}"#),
        ("client_credentials grant", #"{"grant_types": ["client_credentials"]}"#),
        ("implicit grant", #"{"grant_types": ["authorization_code", "implicit"]}"#),
    ])
    func refusedMetadataDocument(_ testCase: (String, String)) {
        #expect(throws: ClientMetadataDocumentFetcher.Failure.self, "\(testCase.0)") {
            try ClientMetadataDocumentFetcher.client(from: Self.document(testCase.1), url: Self.documentURL, now: Date())
        }
    }

    @Test("a metadata document that is not a JSON object is refused", arguments: ["[]", "null", "not json", "\"https://app.example.com\""])
    func nonObjectMetadataDocument(_ body: String) {
        #expect(throws: ClientMetadataDocumentFetcher.Failure.self) {
            try ClientMetadataDocumentFetcher.client(from: Data(body.utf8), url: Self.documentURL, now: Date())
        }
    }
}
