import Foundation
import Hummingbird
import TokenStore

/// `POST /oauth/introspect` (RFC 7662): lets a confidential client (a backend that prefers asking) learn whether a
/// token is active and what it carries. Revoked grants, disabled users and revoked clients make a token inactive.
/// A client learns about its own tokens only, unless an operator gave it introspection rights
/// (`authctl clients add NAME --introspect`): anything else is `active: false`, as for an unknown token.
struct IntrospectionEndpoint: Sendable {
    let store: TokenStore
    let tokens: AccessTokenIssuer

    func respond(_ request: Request, context: AuthorizationServerContext) async -> Response {
        do throws(OAuthError) {
            let (caller, token) = try await ClientAuthentication.presentedToken(request, store: store)
            guard caller.isConfidential else { throw OAuthError.invalidClient("introspection needs a confidential client") }
            guard let answer = await describe(token, context: context),
                caller.mayIntrospect || answer["client_id"] as? String == caller.id
            else { return OAuthResponse.json(["active": false]) }
            return OAuthResponse.json(answer)
        } catch {
            return error.response
        }
    }

    private func describe(_ token: String, context: AuthorizationServerContext) async -> [String: Any]? {
        if token.hasPrefix(OpaqueTokenPrefix.refreshToken) {
            guard let grant = try? store.grant(ofRefreshToken: token), (try? await store.grantIsActive(id: grant.id)) == true,
                (try? store.refreshTokenIsUnused(token)) == true
            else { return nil }
            return [
                "active": true, "token_type": "refresh_token", "client_id": grant.clientID, "sub": grant.subject, "scope": grant.scope,
                "aud": grant.resource, "iss": context.issuerURL, "exp": Int(grant.expiresAt.timeIntervalSince1970),
            ]
        }
        guard let claims = await tokens.verify(token, context: context), (try? await store.grantIsActive(id: claims.sid)) == true else { return nil }
        return [
            "active": true, "token_type": "Bearer", "client_id": claims.client_id, "sub": claims.sub, "scope": claims.scope, "aud": claims.aud,
            "iss": claims.iss, "exp": claims.exp, "iat": claims.iat, "jti": claims.jti,
        ]
    }
}
