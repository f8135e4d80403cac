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
            let (client, token) = try await ClientAuthentication.presentedToken(request, store: store)
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
