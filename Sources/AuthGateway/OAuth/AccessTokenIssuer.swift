import Foundation
import JWTKit
import TokenStore

/// Signs the built-in server's access tokens: RFC 9068 JWTs (`typ: at+jwt`, ES256) whose `aud` is the resource
/// and whose `sid` names the grant, so a revoked grant ends its tokens before they expire.
struct AccessTokenIssuer: Sendable {
    let store: TokenStore

    struct Claims: JWTPayload {
        var iss: String
        var sub: String
        var aud: String
        var exp: Int
        var iat: Int
        var nbf: Int
        var jti: String
        var client_id: String
        var scope: String
        var sid: String
        /// The signed-in user's groups (absent when none), read by `require.groups` through the issuer's claim mapping.
        var groups: [String]?

        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    /// The `exp` of a token issued for `grant` at `now`: the configured lifetime, but never past the grant's end
    /// (which a grant signed in with an API key has no later than the key's expiry).
    static func expiry(for grant: OAuthGrant, context: AuthorizationServerContext, now: Date) -> Int {
        let issuedAt = Int(now.timeIntervalSince1970)
        let grantEnd = Int(grant.expiresAt.timeIntervalSince1970.rounded(.down))
        return max(issuedAt, min(issuedAt + Int(context.settings.accessTokenLifetime), grantEnd))
    }

    /// A signed access token for `grant` (its subject, client and resource), carrying `scopes`.
    func issue(for grant: OAuthGrant, scopes: [String], context: AuthorizationServerContext, now: Date = Date()) async throws -> String {
        let key = try store.currentSigningKey(now: now)
        let keys = JWTKeyCollection()
        await keys.add(ecdsa: try ES256PrivateKey(pem: key.privateKeyPEM), kid: JWKIdentifier(string: key.kid))
        let issuedAt = Int(now.timeIntervalSince1970)
        let claims = Claims(
            iss: context.issuerURL, sub: grant.subject, aud: grant.resource, exp: Self.expiry(for: grant, context: context, now: now),
            iat: issuedAt, nbf: issuedAt, jti: RecordID.make(prefix: "at_"), client_id: grant.clientID, scope: scopes.joined(separator: " "),
            sid: grant.id, groups: grant.groups.isEmpty ? nil : grant.groups.split(separator: " ").map(String.init))
        return try await keys.sign(claims, kid: JWKIdentifier(string: key.kid), header: ["typ": .string("at+jwt")])
    }

    /// The claims of an access token this server signed, if its signature, issuer and expiry are good. Grant status
    /// is the caller's to check.
    func verify(_ token: String, context: AuthorizationServerContext, now: Date = Date()) async -> Claims? {
        guard token.split(separator: ".").count == 3 else { return nil }
        do {
            let keys = JWTKeyCollection()
            try await keys.add(jwksJSON: String(decoding: try SigningKeySetEndpoint.document(from: store), as: UTF8.self))
            let claims = try await keys.verify(token, as: Claims.self)
            guard claims.iss == context.issuerURL, Double(claims.exp) > now.timeIntervalSince1970 else { return nil }
            return claims
        } catch {
            return nil
        }
    }
}
