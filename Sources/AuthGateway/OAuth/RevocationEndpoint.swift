import Foundation
import Hummingbird
import TokenStore

/// `POST /oauth/revoke` (RFC 7009): a client ends one of its tokens, and with it the token's whole grant. The answer
/// is 200 whether or not the token was known, so it tells nothing about other clients' tokens.
struct RevocationEndpoint: Sendable {
    let store: TokenStore
    let tokens: AccessTokenIssuer

    func respond(_ request: Request, context: AuthorizationServerContext) async -> Response {
        do throws(OAuthError) {
            let form = try await TokenEndpoint.form(request)
            let client = try ClientAuthentication.authenticate(headers: request.headers, form: form, store: store)
            guard let token = form["token"] else { throw OAuthError.invalidRequest("token is required") }
            if let grant = await grant(of: token, context: context), grant.clientID == client.id {
                try? store.revokeGrant(id: grant.id)
            }
            return OAuthResponse.json([:])
        } catch {
            return error.response
        }
    }

    private func grant(of token: String, context: AuthorizationServerContext) async -> OAuthGrant? {
        if token.hasPrefix(OpaqueTokenPrefix.refreshToken) { return try? store.grant(ofRefreshToken: token) }
        guard let claims = await tokens.verify(token, context: context) else { return nil }
        return try? store.grant(id: claims.sid)
    }
}

/// `POST /oauth/introspect` (RFC 7662): lets a confidential client (a backend that prefers asking) learn whether a
/// token is active and what it carries. Revoked grants, disabled users and revoked clients make a token inactive.
struct IntrospectionEndpoint: Sendable {
    let store: TokenStore
    let tokens: AccessTokenIssuer

    func respond(_ request: Request, context: AuthorizationServerContext) async -> Response {
        do throws(OAuthError) {
            let form = try await TokenEndpoint.form(request)
            let caller = try ClientAuthentication.authenticate(headers: request.headers, form: form, store: store)
            guard caller.isConfidential else { throw OAuthError.invalidClient("introspection needs a confidential client") }
            guard let token = form["token"] else { throw OAuthError.invalidRequest("token is required") }
            return OAuthResponse.json(await describe(token, context: context) ?? ["active": false])
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
