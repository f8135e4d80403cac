import Crypto
import CryptoExtras
import Foundation

/// A JWT issuer made up inside a test: ES256 and RS256 keys generated on the spot, a JWKS for them, and compact
/// JWS tokens built byte by byte so a test can forge any header or signature it wants.
struct TestIssuer: Sendable {
    let issuer: String
    let ecKey = P256.Signing.PrivateKey()
    let rsaKey: _RSA.Signing.PrivateKey
    let ecKid: String
    let rsaKid: String

    init(issuer: String = "https://sso.example.com/realms/mcp", ecKid: String = "ec-1", rsaKid: String = "rsa-1") throws {
        self.issuer = issuer
        self.ecKid = ecKid
        self.rsaKid = rsaKid
        self.rsaKey = try _RSA.Signing.PrivateKey(keySize: .bits2048)
    }

    var ecJWK: [String: Any] {
        let point = ecKey.publicKey.x963Representation
        return ["kty": "EC", "crv": "P-256", "kid": ecKid, "use": "sig", "alg": "ES256",
                "x": Self.base64url(point[1..<33]), "y": Self.base64url(point[33..<65])]
    }

    var rsaJWK: [String: Any] {
        let primitives = try! rsaKey.publicKey.getKeyPrimitives()
        return ["kty": "RSA", "kid": rsaKid, "use": "sig",
                "n": Self.base64url(primitives.modulus), "e": Self.base64url(primitives.publicExponent)]
    }

    func jwks(_ keys: [[String: Any]]? = nil) -> String {
        let data = try! JSONSerialization.data(withJSONObject: ["keys": keys ?? [ecJWK, rsaJWK]])
        return String(decoding: data, as: UTF8.self)
    }

    /// Standard claims for a token valid now for `audience`, overridden by `claims`.
    func claims(audience: Any = "https://mcp.example.com/ffmpeg", subject: String = "alice", scope: String = "ffmpeg memory", _ overrides: [String: Any?] = [:]) -> [String: Any] {
        let now = Date().timeIntervalSince1970
        var claims: [String: Any] = ["iss": issuer, "sub": subject, "aud": audience, "scope": scope,
                                     "iat": Int(now), "nbf": Int(now) - 5, "exp": Int(now) + 300, "azp": "test-client"]
        for (name, value) in overrides { claims[name] = value }
        return claims
    }

    func es256(_ claims: [String: Any], header: [String: Any?] = [:]) throws -> String {
        try sign(claims, header: merged(["alg": "ES256", "kid": ecKid, "typ": "JWT"], header)) { input in
            try ecKey.signature(for: input).rawRepresentation
        }
    }

    func rs256(_ claims: [String: Any], header: [String: Any?] = [:]) throws -> String {
        try sign(claims, header: merged(["alg": "RS256", "kid": rsaKid, "typ": "JWT"], header)) { input in
            try rsaKey.signature(for: input, padding: .insecurePKCS1v1_5).rawRepresentation
        }
    }

    /// A token with any header and a signature computed by `signer` over `header.payload`.
    func sign(_ claims: [String: Any], header: [String: Any], signer: (Data) throws -> Data) throws -> String {
        let input = Self.segment(header) + "." + Self.segment(claims)
        return input + "." + Self.base64url(try signer(Data(input.utf8)))
    }

    private func merged(_ base: [String: Any], _ overrides: [String: Any?]) -> [String: Any] {
        var header = base
        for (name, value) in overrides { header[name] = value }
        return header
    }

    static func segment(_ object: [String: Any]) -> String {
        base64url(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
    }

    static func base64url(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
