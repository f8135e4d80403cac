import AuthGateway
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing

/// The `jwt` credential kind end to end: a real JWKS server on loopback, the gateway on a live socket, and tokens
/// built byte by byte so every header and signature can be forged.
@Suite("JWT authentication")
struct JWTAuthenticationTests {
    // MARK: Accepted tokens

    @Test("A valid token signed by a key in the issuer's JWKS is allowed with the token's identity", arguments: SigningKey.allCases)
    func validTokenIsAllowed(key: SigningKey) async throws {
        let issuer = Issuers.corp
        try await withJWKSServer(serving: issuer.jwks()) { _, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL))
            let token = try key.sign(issuer.claims(), by: issuer)
            let response = try await send(fixture, bearer: token)
            #expect(response.status == .ok)
            #expect(response.header("X-Auth-Subject") == "alice")
            #expect(response.header("X-Auth-Method") == "jwt")
            #expect(response.header("X-Auth-Issuer") == issuerURL)
            #expect(response.header("X-Auth-Scopes") == "ffmpeg memory")
            #expect(response.header("X-Auth-Client") == "test-client")
            #expect(response.header("X-Auth-Route") == "ffmpeg")
        }
    }

    @Test("Scopes are read from the scp array claim when the scope claim is absent")
    func scopesFromSCPClaim() async throws {
        let issuer = Issuers.corp
        try await withJWKSServer(serving: issuer.jwks()) { _, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL))
            let token = try issuer.es256(issuer.claims(["scope": nil, "scp": ["ffmpeg", "memory"]]))
            let response = try await send(fixture, bearer: token)
            #expect(response.status == .ok)
            #expect(response.header("X-Auth-Subject") == "alice")
            #expect(response.header("X-Auth-Scopes") == "ffmpeg memory")
        }
    }

    // MARK: Refused tokens (401 invalid_token)

    @Test("Tokens with alg none or an HMAC algorithm keyed with public key material are refused", arguments: [
        TokenCase("alg none with an empty signature") { issuer, _ in
            let input = TestIssuer.segment(["alg": "none", "typ": "JWT"]) + "." + TestIssuer.segment(issuer.claims())
            return input + "."
        },
        TokenCase("alg none with kid and an empty signature") { issuer, _ in
            try issuer.sign(issuer.claims(), header: ["alg": "none", "kid": issuer.ecKid, "typ": "JWT"]) { _ in Data() }
        },
        TokenCase("HS256 keyed with the EC public key PEM") { issuer, _ in
            hs256(issuer.claims(), kid: issuer.ecKid, secret: issuer.ecKey.publicKey.pemRepresentation)
        },
        TokenCase("HS256 keyed with the raw JWKS document") { issuer, jwks in
            hs256(issuer.claims(), kid: issuer.ecKid, secret: jwks)
        },
    ])
    func noneAndHMACAreRefused(_ tokenCase: TokenCase) async throws {
        try await expectRefused(tokenCase)
    }

    @Test("A correctly signed token whose alg is not in the issuer's algorithms is refused")
    func algorithmOutsideIssuerListIsRefused() async throws {
        let issuer = Issuers.corp
        try await withJWKSServer(serving: issuer.jwks()) { _, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL, algorithms: "[ES256]"))
            expectInvalidToken(try await send(fixture, bearer: try issuer.rs256(issuer.claims())))
            // Control: the same gateway does accept the issuer's ES256 tokens.
            #expect(try await send(fixture, bearer: try issuer.es256(issuer.claims())).status == .ok)
        }
    }

    @Test("Tokens whose aud does not name the route's resource are refused", arguments: [
        TokenCase("aud is another route's resource") { issuer, _ in
            try issuer.es256(issuer.claims(audience: "https://mcp.example.com/openmemory"))
        },
        TokenCase("aud is the gateway's origin") { issuer, _ in
            try issuer.es256(issuer.claims(audience: "https://mcp.example.com"))
        },
        TokenCase("aud is a list without the resource") { issuer, _ in
            try issuer.es256(issuer.claims(audience: ["https://mcp.example.com/openmemory", "https://other.example.com/ffmpeg"]))
        },
        TokenCase("aud is missing") { issuer, _ in
            try issuer.es256(issuer.claims(["aud": nil]))
        },
    ])
    func wrongAudienceIsRefused(_ tokenCase: TokenCase) async throws {
        try await expectRefused(tokenCase)
    }

    @Test("finding F: identity values with leading or trailing whitespace are refused (401 invalid_token)", arguments: [
        TokenCase("sub with a trailing space") { issuer, _ in try issuer.es256(issuer.claims(subject: "alice ")) },
        TokenCase("sub with a leading space") { issuer, _ in try issuer.es256(issuer.claims(subject: " alice")) },
        TokenCase("sub with a trailing no-break space") { issuer, _ in try issuer.es256(issuer.claims(subject: "alice\u{00A0}")) },
        TokenCase("azp with a trailing space") { issuer, _ in try issuer.es256(issuer.claims(["azp": "test-client "])) },
        TokenCase("a group with a leading space") { issuer, _ in try issuer.es256(issuer.claims(["groups": [" admins"]])) },
        TokenCase("an scp entry with a trailing space") { issuer, _ in try issuer.es256(issuer.claims(["scope": nil, "scp": ["ffmpeg", "memory "]])) },
    ])
    func surroundingWhitespaceIsRefused(_ tokenCase: TokenCase) async throws {
        try await expectRefused(tokenCase)
    }

    @Test("Tokens whose iss is not exactly the issuer's are refused", arguments: [
        TokenCase("iss of another realm") { issuer, _ in
            try issuer.es256(issuer.claims(["iss": "https://sso.example.com/realms/other"]))
        },
        TokenCase("iss with a trailing slash") { issuer, _ in
            try issuer.es256(issuer.claims(["iss": issuerURL + "/"]))
        },
        TokenCase("iss in another case") { issuer, _ in
            try issuer.es256(issuer.claims(["iss": issuerURL.uppercased()]))
        },
        TokenCase("iss is missing") { issuer, _ in
            try issuer.es256(issuer.claims(["iss": nil]))
        },
    ])
    func wrongIssuerIsRefused(_ tokenCase: TokenCase) async throws {
        try await expectRefused(tokenCase)
    }

    @Test("Tokens outside their validity window or without exp are refused", arguments: [
        TokenCase("expired an hour ago") { issuer, _ in
            try issuer.es256(issuer.claims(["exp": now() - 3600]))
        },
        TokenCase("exp is missing") { issuer, _ in
            try issuer.es256(issuer.claims(["exp": nil]))
        },
        TokenCase("exp is a string") { issuer, _ in
            try issuer.es256(issuer.claims(["exp": String(now() + 300)]))
        },
        TokenCase("nbf an hour in the future") { issuer, _ in
            try issuer.es256(issuer.claims(["nbf": now() + 3600]))
        },
        TokenCase("iat an hour in the future") { issuer, _ in
            try issuer.es256(issuer.claims(["iat": now() + 3600]))
        },
    ])
    func outsideValidityIsRefused(_ tokenCase: TokenCase) async throws {
        try await expectRefused(tokenCase)
    }

    @Test("A token signed by another key under a kid of the JWKS is refused", arguments: SigningKey.allCases)
    func signatureFromOtherKeyIsRefused(key: SigningKey) async throws {
        let issuer = Issuers.corp
        let impostor = Issuers.impostor
        try await withJWKSServer(serving: issuer.jwks()) { _, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL))
            expectInvalidToken(try await send(fixture, bearer: try key.sign(impostor.claims(), by: impostor)))
        }
    }

    @Test("T24: ECDSA psychic signatures (r = s = 0, r or s >= n, r = s = 0 in DER) from the trusted ES256 kid are refused", arguments: [
        TokenCase("r = s = 0, 64 zero bytes") { issuer, _ in
            try issuer.es256(issuer.claims()) { _ in Data(count: 64) }
        },
        TokenCase("r = s = 0 in DER (MAYCAQACAQA)") { issuer, _ in
            try issuer.es256(issuer.claims()) { _ in Data([0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]) }
        },
        TokenCase("r = n, s of a real signature") { issuer, _ in
            try issuer.es256(issuer.claims()) { real in p256Order + real.suffix(32) }
        },
        TokenCase("r of a real signature, s = n") { issuer, _ in
            try issuer.es256(issuer.claims()) { real in real.prefix(32) + p256Order }
        },
        TokenCase("r = s = n") { issuer, _ in
            try issuer.es256(issuer.claims()) { _ in p256Order + p256Order }
        },
        TokenCase("r = n + 1, s = n + 1") { issuer, _ in
            try issuer.es256(issuer.claims()) { _ in p256OrderPlusOne + p256OrderPlusOne }
        },
        TokenCase("r = s = 2^256 - 1") { issuer, _ in
            try issuer.es256(issuer.claims()) { _ in Data(repeating: 0xFF, count: 64) }
        },
        TokenCase("r = 0, s of a real signature") { issuer, _ in
            try issuer.es256(issuer.claims()) { real in Data(count: 32) + real.suffix(32) }
        },
    ])
    func t24PsychicSignatureIsRefused(_ tokenCase: TokenCase) async throws {
        try await expectRefused(tokenCase)
    }

    @Test("T24 control: the real signature the psychic variants start from is accepted")
    func t24ControlRealSignatureIsAccepted() async throws {
        let issuer = Issuers.corp
        try await withJWKSServer(serving: issuer.jwks()) { _, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL))
            let token = try issuer.es256(issuer.claims()) { real in real }
            #expect(try await send(fixture, bearer: token).status == .ok)
        }
    }

    @Test("Tokens with header parameters the gateway does not understand are refused", arguments: [
        TokenCase("crit naming b64") { issuer, _ in
            try issuer.es256(issuer.claims(), header: ["crit": ["b64"], "b64": false])
        },
        TokenCase("crit naming a private parameter") { issuer, _ in
            try issuer.es256(issuer.claims(), header: ["crit": ["exp"], "exp": now() + 300])
        },
        TokenCase("typ JWE") { issuer, _ in
            try issuer.es256(issuer.claims(), header: ["typ": "JWE"])
        },
        TokenCase("typ dpop+jwt") { issuer, _ in
            try issuer.es256(issuer.claims(), header: ["typ": "dpop+jwt"])
        },
    ])
    func unknownHeaderParametersAreRefused(_ tokenCase: TokenCase) async throws {
        try await expectRefused(tokenCase)
    }

    @Test("A jku or x5u header pointing at an attacker's key set is never fetched and the token is refused", arguments: ["jku", "x5u"])
    func keyURLHeadersAreIgnored(parameter: String) async throws {
        let issuer = Issuers.corp
        let attacker = Issuers.attacker
        try await withJWKSServer(serving: attacker.jwks()) { attackerEndpoint, attackerURL in
            try await withJWKSServer(serving: issuer.jwks()) { _, jwksURL in
                let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL))
                let token = try attacker.es256(attacker.claims(), header: [parameter: attackerURL])
                expectInvalidToken(try await send(fixture, bearer: token))
                #expect(attackerEndpoint.hits == 0)
            }
        }
    }

    @Test("An embedded jwk header is never used to verify the token", arguments: [nil, "ec-1", "attacker-1"] as [String?])
    func embeddedJWKIsIgnored(kid: String?) async throws {
        let issuer = Issuers.corp
        let attacker = Issuers.attacker
        try await withJWKSServer(serving: issuer.jwks()) { _, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL))
            let token = try attacker.es256(attacker.claims(), header: ["jwk": attacker.ecJWK, "kid": kid])
            expectInvalidToken(try await send(fixture, bearer: token))
        }
    }

    @Test("A token from an issuer the route does not list is refused")
    func issuerNotListedOnRouteIsRefused() async throws {
        let corp = Issuers.corp
        let partner = Issuers.partner
        try await withJWKSServer(serving: partner.jwks()) { partnerEndpoint, partnerURL in
            try await withJWKSServer(serving: corp.jwks()) { corpEndpoint, corpURL in
                let partnerIssuer = """
                      partner:
                        issuer: https://partner.example.com
                        jwks_url: \(partnerURL)
                        jwks_min_refresh_interval: 0s
                    """
                let fixture = try GatewayFixture(
                    policy: jwtPolicy(jwksURL: corpURL, extraIssuers: partnerIssuer, routeIssuers: "[partner]"))
                expectInvalidToken(try await send(fixture, bearer: try corp.es256(corp.claims())))
                #expect(corpEndpoint.hits == 0)
                // Control: the route's own issuer is accepted.
                let allowed = try await send(fixture, bearer: try partner.es256(partner.claims()))
                #expect(allowed.status == .ok)
                #expect(allowed.header("X-Auth-Issuer") == "https://partner.example.com")
                #expect(partnerEndpoint.hits == 1)
            }
        }
    }

    // MARK: Authorization

    @Test("A valid token without the route's scope is refused with insufficient_scope")
    func missingScopeIsForbidden() async throws {
        let issuer = Issuers.corp
        try await withJWKSServer(serving: issuer.jwks()) { _, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL))
            let response = try await send(fixture, bearer: try issuer.es256(issuer.claims(scope: "memory")))
            #expect(response.status == .forbidden)
            let challenge = try #require(response.header("WWW-Authenticate"))
            #expect(challenge.hasPrefix("Bearer "))
            #expect(challenge.contains(#"error="insufficient_scope""#))
            #expect(challenge.contains(#"scope="ffmpeg""#))
            #expect(challenge.contains(#"resource_metadata="\#(resourceMetadataURL)""#))
            #expect(response.json["error"] as? String == "insufficient_scope")
            #expect(response.json["scope"] as? String == "ffmpeg")
            #expect(response.header("X-Auth-Subject") == nil)
        }
    }

    // MARK: JWKS refresh and availability

    @Test("An unknown kid triggers exactly one JWKS refresh, which picks up the new key")
    func unknownKidRefreshesOnce() async throws {
        let issuer = Issuers.corp
        let rotated = Issuers.rotated
        try await withJWKSServer(serving: issuer.jwks([issuer.ecJWK])) { endpoint, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL, minRefresh: "0s"))
            #expect(try await send(fixture, bearer: try issuer.es256(issuer.claims())).status == .ok)
            #expect(endpoint.hits == 1)

            endpoint.serve(issuer.jwks([issuer.ecJWK, rotated.ecJWK]))
            let response = try await send(fixture, bearer: try rotated.es256(rotated.claims(subject: "bob")))
            #expect(response.status == .ok)
            #expect(response.header("X-Auth-Subject") == "bob")
            #expect(endpoint.hits == 2)
            #expect(await fixture.gateway.jwt.jwksFetchCount(issuer: "corp") == 2)
        }
    }

    @Test("Refreshes for unknown kids are rate-limited by jwks_min_refresh_interval")
    func unknownKidRefreshIsRateLimited() async throws {
        let issuer = Issuers.corp
        let rotated = Issuers.rotated
        let another = Issuers.another
        try await withJWKSServer(serving: issuer.jwks([issuer.ecJWK])) { endpoint, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL, minRefresh: "1h"))
            #expect(try await send(fixture, bearer: try issuer.es256(issuer.claims())).status == .ok)
            #expect(endpoint.hits == 1)

            // The new keys are published, but the initial fetch was the last attempt less than 1h ago: no refresh.
            endpoint.serve(issuer.jwks([issuer.ecJWK, rotated.ecJWK, another.ecJWK]))
            expectInvalidToken(try await send(fixture, bearer: try rotated.es256(rotated.claims())))
            expectInvalidToken(try await send(fixture, bearer: try another.es256(another.claims())))
            #expect(endpoint.hits == 1)
            #expect(await fixture.gateway.jwt.jwksFetchCount(issuer: "corp") == 1)
        }
    }

    @Test("When the JWKS goes down after a good fetch, the last good keys keep verifying within the stale limit")
    func staleKeysServeWhileJWKSIsDown() async throws {
        let issuer = Issuers.corp
        try await withJWKSServer(serving: issuer.jwks()) { endpoint, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL, minRefresh: "0s", ttl: "0s", stale: "1h"))
            #expect(try await send(fixture, bearer: try issuer.es256(issuer.claims())).status == .ok)

            endpoint.goDown()
            let response = try await send(fixture, bearer: try issuer.es256(issuer.claims()))
            #expect(response.status == .ok)
            #expect(response.header("X-Auth-Subject") == "alice")
            // The expired cache was refetched (and failed) before falling back to the last good keys.
            #expect(endpoint.hits == 2)
        }
    }

    @Test("When the JWKS stays down beyond the stale limit, the gateway fails closed with 503")
    func failsClosedBeyondStaleLimit() async throws {
        let issuer = Issuers.corp
        try await withJWKSServer(serving: issuer.jwks()) { endpoint, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL, minRefresh: "0s", ttl: "0s", stale: "0s"))
            #expect(try await send(fixture, bearer: try issuer.es256(issuer.claims())).status == .ok)

            endpoint.goDown()
            expectUnavailable(try await send(fixture, bearer: try issuer.es256(issuer.claims())))
            #expect(endpoint.hits == 2)
        }
    }

    @Test("When the JWKS has never been fetched successfully, valid-looking tokens get 503", arguments: UnreachableJWKS.allCases)
    func neverReachableJWKSFailsClosed(_ failure: UnreachableJWKS) async throws {
        let issuer = Issuers.corp
        let token = try issuer.es256(issuer.claims())
        // A 1h refresh interval: the failed first fetch is not retried, so the second request is answered at once.
        switch failure {
        case .closedPort:
            let reserved = try ReservedPort()
            defer { reserved.release() }
            let fixture = try GatewayFixture(
                policy: jwtPolicy(jwksURL: "http://127.0.0.1:\(reserved.port)/jwks.json", minRefresh: "1h"))
            expectUnavailable(try await send(fixture, bearer: token))
            expectUnavailable(try await send(fixture, bearer: token))
            #expect(await fixture.gateway.jwt.jwksFetchCount(issuer: "corp") == 1)
        case .httpError, .emptyKeySet:
            try await withJWKSServer(serving: #"{"keys":[]}"#) { endpoint, jwksURL in
                if failure == .httpError { endpoint.goDown() }
                let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL, minRefresh: "1h"))
                expectUnavailable(try await send(fixture, bearer: token))
                expectUnavailable(try await send(fixture, bearer: token))
                #expect(endpoint.hits == 1)
            }
        }
    }

    /// A table case: the token is made from a trusted issuer whose JWKS (the second argument) the gateway serves.
    private func expectRefused(_ tokenCase: TokenCase, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let issuer = Issuers.corp
        let jwks = issuer.jwks()
        try await withJWKSServer(serving: jwks) { _, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL))
            let response = try await send(fixture, bearer: try tokenCase.make(issuer, jwks))
            expectInvalidToken(response, sourceLocation: sourceLocation)
        }
    }
}

// MARK: - Helpers

private let issuerURL = "https://sso.example.com/realms/mcp"
private let resourceMetadataURL = "https://mcp.example.com/.well-known/oauth-protected-resource/ffmpeg"

extension JWTAuthenticationTests {
    /// The key type a test signs with.
    enum SigningKey: String, CaseIterable, Sendable, CustomTestStringConvertible {
        var testDescription: String { rawValue }

        case es256 = "ES256 (kid ec-1)"
        case rs256 = "RS256 (kid rsa-1, JWK without alg)"

        func sign(_ claims: [String: Any], by issuer: TestIssuer) throws -> String {
            switch self {
            case .es256: try issuer.es256(claims)
            case .rs256: try issuer.rs256(claims)
            }
        }
    }

    /// How a JWKS can be out of reach from the start.
    enum UnreachableJWKS: String, CaseIterable, Sendable, CustomTestStringConvertible {
        var testDescription: String { rawValue }

        case closedPort = "nothing listens on the port"
        case httpError = "the JWKS URL answers 503"
        case emptyKeySet = "the JWKS has no usable key"
    }

    /// A named way of building a token from the trusted issuer and its served JWKS document.
    struct TokenCase: Sendable, CustomTestStringConvertible {
        let testDescription: String
        let make: @Sendable (TestIssuer, _ jwks: String) throws -> String

        init(_ description: String, make: @escaping @Sendable (TestIssuer, _ jwks: String) throws -> String) {
            self.testDescription = description
            self.make = make
        }
    }
}

private func now() -> Int { Int(Date().timeIntervalSince1970) }

/// n, the order of the P-256 group, as 32 big-endian bytes (SEC 2), and n + 1: an ECDSA verifier must refuse any r or
/// s outside [1, n - 1] (CVE-2022-21449).
private let p256Order = Data(hex: "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551")
private let p256OrderPlusOne = Data(hex: "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632552")

extension TestIssuer {
    /// An ES256 token under the issuer's trusted kid whose signature is `tamper` applied to the real raw (r || s)
    /// signature.
    fileprivate func es256(_ claims: [String: Any], tamper: (Data) -> Data) throws -> String {
        try sign(claims, header: ["alg": "ES256", "kid": ecKid, "typ": "JWT"]) { input in
            tamper(try ecKey.signature(for: input).rawRepresentation)
        }
    }
}

extension Data {
    fileprivate init(hex: String) {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        self.init(bytes)
    }
}

/// A token whose signature is HMAC-SHA256 under `secret`, the classic algorithm-confusion forgery.
private func hs256(_ claims: [String: Any], kid: String, secret: String) -> String {
    let input = TestIssuer.segment(["alg": "HS256", "kid": kid, "typ": "JWT"]) + "." + TestIssuer.segment(claims)
    let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: Data(secret.utf8)))
    return input + "." + TestIssuer.base64url(Data(mac))
}

/// The test issuers, made once because RSA key generation is slow. Only their keys are shared: every test starts
/// its own JWKS server and gateway, so no state crosses tests.
private enum Issuers {
    /// The trusted issuer (kids ec-1 and rsa-1).
    static let corp = try! TestIssuer()
    /// Other keys under the trusted issuer's kids.
    static let impostor = try! TestIssuer(ecKid: "ec-1", rsaKid: "rsa-1")
    /// Keys the trusted issuer publishes later (kids ec-2 and ec-3).
    static let rotated = try! TestIssuer(ecKid: "ec-2", rsaKid: "rsa-2")
    static let another = try! TestIssuer(ecKid: "ec-3", rsaKid: "rsa-3")
    /// Keys of an attacker, under kids the trusted JWKS does not have.
    static let attacker = try! TestIssuer(ecKid: "attacker-1", rsaKid: "attacker-rsa-1")
    /// A second trusted issuer.
    static let partner = try! TestIssuer(issuer: "https://partner.example.com", ecKid: "partner-1", rsaKid: "partner-rsa-1")
}

/// The policy under test: issuer `corp` on `jwksURL`, and the `ffmpeg` route accepting JWTs with scope `ffmpeg`.
/// `extraIssuers` is YAML for more entries under `issuers:`, indented by two spaces.
private func jwtPolicy(
    jwksURL: String, algorithms: String = "[RS256, ES256]", minRefresh: String = "0s", ttl: String = "5m",
    stale: String = "1h", extraIssuers: String = "", routeIssuers: String? = nil
) -> String {
    var issuers = """
        issuers:
          corp:
            issuer: \(issuerURL)
            jwks_url: \(jwksURL)
            algorithms: \(algorithms)
            jwks_min_refresh_interval: \(minRefresh)
            jwks_cache_ttl: \(ttl)
            jwks_stale_limit: \(stale)

        """
    if !extraIssuers.isEmpty { issuers += extraIssuers + "\n" }
    var routes = """
          - name: ffmpeg
            match: { host: mcp.example.com, path: "/ffmpeg/**" }
            accept: [jwt]
            require: { scopes: [ffmpeg] }

        """
    if let routeIssuers { routes += "    issuers: \(routeIssuers)\n" }
    return testPolicy(issuers: issuers, routes: routes)
}

/// Runs `body` with a JWKS server on loopback serving `document`, stopping the server afterwards in every case.
private func withJWKSServer(
    serving document: String, _ body: (JWKSEndpoint, _ url: String) async throws -> Void
) async throws {
    let endpoint = JWKSEndpoint()
    endpoint.serve(document)
    let router = Router<BasicRequestContext>()
    endpoint.register(on: router)
    let server = try await LoopbackServer(router: router)
    do {
        try await body(endpoint, server.baseURL + "/jwks.json")
    } catch {
        await server.stop()
        throw error
    }
    await server.stop()
}

/// Sends one forwardAuth request for `GET https://mcp.example.com/ffmpeg/tools` with the bearer token to the live gateway.
private func send(_ fixture: GatewayFixture, bearer token: String, uri: String = "/ffmpeg/tools") async throws -> TestResponse {
    let box = ResponseBox()
    try await fixture.withLiveServer { client in
        let response = try await client.execute(
            uri: "/auth", method: .get, headers: forwardedHeaders(uri: uri, extra: [("Authorization", "Bearer \(token)")]))
        box.store(response)
    }
    return try #require(box.response)
}

private final class ResponseBox: Sendable {
    private let stored = Mutex<TestResponse?>(nil)
    func store(_ response: TestResponse) { stored.withLock { $0 = response } }
    var response: TestResponse? { stored.withLock { $0 } }
}

/// 401 with an `invalid_token` challenge pointing at the route's resource metadata, and no identity.
private func expectInvalidToken(_ response: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(response.status == .unauthorized, sourceLocation: sourceLocation)
    let challenge = response.header("WWW-Authenticate") ?? ""
    #expect(challenge.hasPrefix("Bearer "), "challenge: \(challenge)", sourceLocation: sourceLocation)
    #expect(challenge.contains(#"error="invalid_token""#), "challenge: \(challenge)", sourceLocation: sourceLocation)
    #expect(challenge.contains(#"resource_metadata="\#(resourceMetadataURL)""#), "challenge: \(challenge)", sourceLocation: sourceLocation)
    #expect(response.json["error"] as? String == "invalid_token", sourceLocation: sourceLocation)
    #expect(response.header("X-Auth-Subject") == nil, sourceLocation: sourceLocation)
}

/// 503 `temporarily_unavailable` with a retry hint, and no identity.
private func expectUnavailable(_ response: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(response.status == .serviceUnavailable, sourceLocation: sourceLocation)
    #expect(response.json["error"] as? String == "temporarily_unavailable", sourceLocation: sourceLocation)
    #expect(response.header("Retry-After") == "5", sourceLocation: sourceLocation)
    #expect(response.header("X-Auth-Subject") == nil, sourceLocation: sourceLocation)
}

/// A TCP port on 127.0.0.1 that is bound but never listened on: connections to it are refused, and no other
/// server can take it while the test runs (unlike the port of a stopped server).
private final class ReservedPort: Sendable {
    let port: Int
    private let descriptor: Int32

    struct Failure: Error { let call: String }

    init() throws {
        #if canImport(Glibc)
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let descriptor = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard descriptor >= 0 else { throw Failure(call: "socket") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(descriptor, socketAddress, length) == 0 && getsockname(descriptor, socketAddress, &length) == 0
            }
        }
        guard bound else {
            _ = close(descriptor)
            throw Failure(call: "bind")
        }
        self.descriptor = descriptor
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    func release() { _ = close(descriptor) }
}

// MARK: Verified-token cache

extension JWTAuthenticationTests {
    @Test("A token verified before stops working as soon as its key leaves the issuer's JWKS")
    func cachedTokenFollowsKeyRotation() async throws {
        let issuer = Issuers.corp
        try await withJWKSServer(serving: issuer.jwks()) { endpoint, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL, ttl: "0s"))
            let token = try issuer.es256(issuer.claims())
            for _ in 0..<3 { #expect(try await send(fixture, bearer: token).status == .ok) }
            endpoint.serve(Issuers.rotated.jwks())
            expectInvalidToken(try await send(fixture, bearer: token))
        }
    }

    @Test("A token verified for one route is checked again against another route's audience")
    func cachedTokenIsCheckedPerRoute() async throws {
        let issuer = Issuers.corp
        try await withJWKSServer(serving: issuer.jwks()) { _, jwksURL in
            let policy = testPolicy(
                issuers: "issuers:\n  corp: { issuer: \"\(issuerURL)\", jwks_url: \"\(jwksURL)\", algorithms: [ES256] }",
                routes: """
                      - { name: ffmpeg, match: { path: "/ffmpeg/**" }, accept: [jwt] }
                      - { name: other, match: { path: "/other/**" }, accept: [jwt] }
                    """)
            let fixture = try GatewayFixture(policy: policy)
            let token = try issuer.es256(issuer.claims(audience: "https://mcp.example.com/ffmpeg"))
            for _ in 0..<2 {
                #expect(try await send(fixture, bearer: token, uri: "/ffmpeg/tools").status == .ok)
                #expect(try await send(fixture, bearer: token, uri: "/other/tools").status == .unauthorized)
            }
        }
    }

    @Test("A cached token still fails closed when its issuer stays unreachable beyond the stale limit")
    func cachedTokenFailsClosedWhenIssuerIsGone() async throws {
        let issuer = Issuers.corp
        try await withJWKSServer(serving: issuer.jwks()) { endpoint, jwksURL in
            let fixture = try GatewayFixture(policy: jwtPolicy(jwksURL: jwksURL, ttl: "0s", stale: "0s"))
            let token = try issuer.es256(issuer.claims())
            #expect(try await send(fixture, bearer: token).status == .ok)
            endpoint.goDown()
            expectUnavailable(try await send(fixture, bearer: token))
        }
    }
}
