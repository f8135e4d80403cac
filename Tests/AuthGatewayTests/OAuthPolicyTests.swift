import AuthGateway
import Foundation
import Testing

/// The `kind: builtin` issuer in a policy: the gateway's own authorization server and its settings.
@Suite("Built-in issuer policy")
struct OAuthPolicyTests {
    static let head = """
        gateway:
          public_url: https://mcp.example.com
          trusted_proxies: [127.0.0.1/32]
        issuers:
        """

    /// A policy whose `issuers:` section is `issuers` (indented two spaces), with one route accepting their tokens.
    static func policy(_ issuers: String) -> String {
        head + "\n" + issuers + "\nroutes:\n  - name: ffmpeg\n    match: { path: \"/ffmpeg/**\" }\n    accept: [jwt]\n"
    }

    static func builtin(_ yaml: String, environment: [String: String] = [:]) throws -> IssuerPolicy {
        let loaded = try PolicyLoader.load(yaml: policy(yaml), file: "oauth.yaml", environment: environment)
        return try #require(loaded.policy.builtinIssuer)
    }

    @Test("kind: builtin alone gives the authorization server its defaults, with public_url as the issuer")
    func defaults() throws {
        let issuer = try Self.builtin("  self:\n    kind: builtin\n")
        #expect(issuer.name == "self")
        #expect(issuer.issuer == "https://mcp.example.com")
        #expect(issuer.keySource == .store)
        #expect(issuer.algorithms == ["ES256"])
        #expect(issuer.audience == .routeResource)
        #expect(issuer.isBuiltin)
        let settings = try #require(issuer.authorizationServer)
        #expect(settings == AuthorizationServerSettings())
        #expect(settings.accessTokenLifetime == 600)
        #expect(settings.refreshTokenLifetime == 30 * 86400)
        #expect(settings.codeLifetime == 60)
        #expect(settings.consentLifetime == 600)
        #expect(settings.registration == .open)
        #expect(settings.clientMetadataDocuments)
        #expect(!settings.allowPrivateMetadataHosts)
    }

    @Test("a route that names no issuers accepts the built-in issuer's tokens like any other issuer's")
    func routesTrustTheBuiltinIssuer() throws {
        let loaded = try PolicyLoader.load(yaml: Self.policy("  self:\n    kind: builtin\n"), file: "oauth.yaml", environment: [:])
        #expect(loaded.policy.routes.first?.issuers == ["self"])
        #expect(loaded.policy.routes.first?.resource == "https://mcp.example.com/ffmpeg")
    }

    @Test("an issuer without kind is an external issuer, not the built-in server")
    func externalIssuerIsNotBuiltin() throws {
        let loaded = try PolicyLoader.load(
            yaml: Self.policy("  corp: { issuer: \"https://sso.example.com\", jwks_url: \"https://sso.example.com/jwks\" }\n"), file: "oauth.yaml",
            environment: [:])
        #expect(loaded.policy.builtinIssuer == nil)
        #expect(loaded.policy.issuer(named: "corp")?.isBuiltin == false)
    }

    @Test("lifetimes, registration and metadata-document switches are read from the issuer")
    func settingsAreRead() throws {
        let issuer = try Self.builtin("""
              self:
                kind: builtin
                access_token_ttl: 5m
                refresh_token_ttl: 7d
                code_ttl: 30s
                consent_ttl: 2m
                registration: off
                client_id_metadata_documents: false
                allow_private_metadata_hosts: true
            """)
        let settings = try #require(issuer.authorizationServer)
        #expect(settings.accessTokenLifetime == 300)
        #expect(settings.refreshTokenLifetime == 7 * 86400)
        #expect(settings.codeLifetime == 30)
        #expect(settings.consentLifetime == 120)
        #expect(settings.registration == .off)
        #expect(!settings.clientMetadataDocuments)
        #expect(settings.allowPrivateMetadataHosts)
    }

    @Test("lifetimes at the ends of their ranges are accepted", arguments: [
        "access_token_ttl: 1s", "access_token_ttl: 24h", "refresh_token_ttl: 60s", "refresh_token_ttl: 366d", "code_ttl: 1s",
        "code_ttl: 10m", "consent_ttl: 10s", "consent_ttl: 1h",
    ])
    func lifetimeBounds(_ line: String) throws {
        _ = try Self.builtin("  self:\n    kind: builtin\n    \(line)\n")
    }

    @Test("registration: token reads the initial access token from the named environment variable")
    func registrationToken() throws {
        let yaml = "  self:\n    kind: builtin\n    registration: token\n    registration_token_env: REG_TOKEN\n"
        #expect(try Self.builtin(yaml, environment: ["REG_TOKEN": "s3cret"]).authorizationServer?.registration
            == .token(environmentName: "REG_TOKEN", value: "s3cret"))
        #expect(try Self.builtin(yaml).authorizationServer?.registration == .token(environmentName: "REG_TOKEN", value: nil))
        #expect(try Self.builtin(yaml, environment: ["REG_TOKEN": ""]).authorizationServer?.registration
            == .token(environmentName: "REG_TOKEN", value: nil))
    }

    @Test("registration: open is the explicit form of the default")
    func registrationOpen() throws {
        #expect(try Self.builtin("  self:\n    kind: builtin\n    registration: open\n").authorizationServer?.registration == .open)
    }

    /// Invalid built-in issuers, each with the line (of the whole policy) and a fragment of the message.
    static let invalidIssuers: [(String, String, Int, String)] = [
        ("registration token without its variable", "  self:\n    kind: builtin\n    registration: token\n", 7, "registration: token needs registration_token_env"),
        ("token variable without registration: token", "  self:\n    kind: builtin\n    registration_token_env: REG\n", 7, "registration_token_env needs registration: token"),
        ("unknown registration mode", "  self:\n    kind: builtin\n    registration: closed\n", 7, "'closed' is not one of open, token, off"),
        ("unknown kind", "  self:\n    kind: keycloak\n", 6, "kind: 'keycloak' is not known"),
        ("two builtin issuers", "  one:\n    kind: builtin\n  two:\n    kind: builtin\n", 7, "only one issuer can be of kind builtin ('one' already is)"),
        ("unknown key", "  self:\n    kind: builtin\n    jwks_url: https://x.test/jwks\n", 7, "unknown key 'jwks_url'"),
        ("external-issuer key on builtin", "  self:\n    kind: builtin\n    issuer: https://other.example.com\n", 7, "unknown key 'issuer'"),
        ("access token lifetime too long", "  self:\n    kind: builtin\n    access_token_ttl: 2d\n", 7, "access_token_ttl must be between 1s and 86400s"),
        ("refresh token lifetime too short", "  self:\n    kind: builtin\n    refresh_token_ttl: 59s\n", 7, "refresh_token_ttl must be between 60s"),
        ("code lifetime too long", "  self:\n    kind: builtin\n    code_ttl: 11m\n", 7, "code_ttl must be between 1s and 600s"),
        ("consent lifetime too short", "  self:\n    kind: builtin\n    consent_ttl: 5s\n", 7, "consent_ttl must be between 10s and 3600s"),
        ("not a duration", "  self:\n    kind: builtin\n    access_token_ttl: soon\n", 7, "must be a duration"),
        ("not a boolean", "  self:\n    kind: builtin\n    client_id_metadata_documents: maybe\n", 7, "client_id_metadata_documents"),
    ]

    @Test("an invalid built-in issuer is refused with file:line and what is wrong", arguments: invalidIssuers)
    func invalidBuiltinIssuer(_ testCase: (String, String, Int, String)) throws {
        let (_, yaml, line, fragment) = testCase
        let error = try #require(throws: PolicyLoadError.self) { try PolicyLoader.load(yaml: Self.policy(yaml), file: "bad.yaml", environment: [:]) }
        let matching = error.errors.filter { $0.message.contains(fragment) }
        #expect(!matching.isEmpty, "expected '\(fragment)' in \(error.description)")
        #expect(matching.first?.line == line, "\(error.description)")
        #expect(error.description.contains("bad.yaml:\(line): "))
    }

    @Test("the built-in issuer follows public_url, path included")
    func issuerWithPath() throws {
        let yaml = """
            gateway:
              public_url: https://mcp.example.com/tenant
              trusted_proxies: [127.0.0.1/32]
            issuers:
              self: { kind: builtin }
            routes:
              - name: ffmpeg
                match: { path: "/tenant/ffmpeg/**" }
                accept: [jwt]
            """
        let loaded = try PolicyLoader.load(yaml: yaml, file: "oauth.yaml", environment: [:])
        #expect(loaded.policy.builtinIssuer?.issuer == "https://mcp.example.com/tenant")
    }
}
