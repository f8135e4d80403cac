import Foundation
import Hummingbird
import TokenStore

/// `POST /oauth/token`: exchanges an authorization code (PKCE verified, single use), rotates refresh tokens
/// (reuse revokes the family), and serves client credentials to confidential clients.
struct TokenEndpoint: Sendable {
    static let maximumFormSize = 16 * 1024

    let store: TokenStore
    let tokens: AccessTokenIssuer

    func respond(_ request: Request, context: AuthorizationServerContext) async -> Response {
        do {
            return try await exchange(request, context: context)
        } catch {
            return error.response
        }
    }

    private func exchange(_ request: Request, context: AuthorizationServerContext) async throws(OAuthError) -> Response {
        let form = try await Self.form(request)
        if let repeated = form.repeated.first { throw .invalidRequest("parameter \(repeated) appears more than once") }
        let client = try ClientAuthentication.authenticate(headers: request.headers, form: form, store: store)
        switch form["grant_type"] {
        case "authorization_code": return try await authorizationCode(form, client: client, context: context)
        case "refresh_token": return try await refreshToken(form, client: client, context: context)
        case "client_credentials": return try await clientCredentials(form, client: client, context: context)
        case nil: throw .invalidRequest("grant_type is required")
        case let other?: throw OAuthError(code: "unsupported_grant_type", description: "grant_type \(other) is not supported")
        }
    }

    private func authorizationCode(_ form: OAuthParameters, client: OAuthClient, context: AuthorizationServerContext) async throws(OAuthError) -> Response {
        guard client.allows(grantType: "authorization_code") else { throw .unauthorizedClient("the client did not register the authorization_code grant") }
        guard let code = form["code"], let redirectURI = form["redirect_uri"], let verifier = form["code_verifier"] else {
            throw .invalidRequest("code, redirect_uri and code_verifier are required")
        }
        // Checked before redemption, so a request with the wrong resource does not spend its client's good code.
        if let resource = form["resource"], let known = try storeCall({ try store.grant(ofCode: code) }), known.code.clientID == client.id,
            resource != known.grant.resource
        {
            throw .invalidTarget("resource differs from the authorized one")
        }
        let redeemed = try storeCall { try store.redeemCode(code) }
        let grant: OAuthGrant
        switch redeemed {
        case .redeemed(let record, let found):
            // The code is spent either way; a failed check also ends its grant, which nobody can use any more.
            guard record.clientID == client.id, record.redirectURI == redirectURI, PKCE.verify(verifier: verifier, challenge: record.codeChallenge) else {
                try? store.revokeGrant(id: found.id)
                throw .invalidGrant("the code, its client, redirect_uri or code_verifier do not match")
            }
            grant = found
        case .reused: throw .invalidGrant("the code was already used; tokens issued from it are revoked")
        case .expired: throw .invalidGrant("the code has expired")
        case .unknown: throw .invalidGrant("the code is not valid")
        }
        if let resource = form["resource"], resource != grant.resource { throw .invalidTarget("resource differs from the authorized one") }
        let refresh = client.allows(grantType: "refresh_token") ? try storeCall { try store.issueRefreshToken(grantID: grant.id) } : nil
        return try await answer(grant: grant, scopes: grant.scopeList, refreshToken: refresh, context: context)
    }

    private func refreshToken(_ form: OAuthParameters, client: OAuthClient, context: AuthorizationServerContext) async throws(OAuthError) -> Response {
        guard client.allows(grantType: "refresh_token") else { throw .unauthorizedClient("the client did not register the refresh_token grant") }
        guard let presented = form["refresh_token"] else { throw .invalidRequest("refresh_token is required") }
        // Parameter checks come before rotation, so a bad request does not spend a good token.
        if let known = try storeCall({ try store.grant(ofRefreshToken: presented) }), known.clientID == client.id {
            if let resource = form["resource"], resource != known.resource { throw .invalidTarget("resource differs from the authorized one") }
            if let scope = form["scope"], let extra = Self.scopes(scope).first(where: { !known.scopeList.contains($0) }) {
                throw .invalidScope("scope \(extra) was not granted")
            }
        }
        switch try storeCall({ try store.rotateRefreshToken(presented, clientID: client.id) }) {
        case .rotated(let grant, let newToken):
            let scopes = form["scope"].map(Self.scopes) ?? grant.scopeList
            return try await answer(grant: grant, scopes: scopes, refreshToken: newToken, context: context)
        case .reused: throw .invalidGrant("the refresh token was already used; its whole family is revoked")
        case .invalid: throw .invalidGrant("the refresh token is not valid")
        }
    }

    /// Only machine clients an operator made get these tokens: their subject, at most their scopes, and only for
    /// their resources. Without `resource` (mcp-proxy and similar send none) a single-resource client gets its one.
    private func clientCredentials(_ form: OAuthParameters, client: OAuthClient, context: AuthorizationServerContext) async throws(OAuthError) -> Response {
        guard client.isMachineClient else {
            throw .unauthorizedClient("the client_credentials grant is for machine clients made with `authctl clients add`")
        }
        let resource: String
        if let requested = form["resource"] {
            guard client.resources.contains(requested) else { throw .invalidTarget("the client may not get tokens for that resource") }
            resource = requested
        } else {
            guard client.resources.count == 1, let only = client.resources.first else {
                throw .invalidTarget("resource is required: the client may get tokens for several resources (RFC 8707)")
            }
            resource = only
        }
        guard let resourceScopes = context.resources[resource] else { throw .invalidTarget("this server issues no tokens for that resource") }
        let allowed = client.scope.map(Self.scopes) ?? []
        let scopes = form["scope"].map(Self.scopes) ?? resourceScopes.filter(allowed.contains)
        if let extra = scopes.first(where: { !resourceScopes.contains($0) || !allowed.contains($0) }) { throw .invalidScope("scope \(extra) is not available") }
        let grant = try storeCall {
            try store.createMachineGrant(client: client, scope: scopes, resource: resource, lifetime: context.settings.accessTokenLifetime)
        }
        return try await answer(grant: grant, scopes: scopes, refreshToken: nil, context: context)
    }

    private func answer(grant: OAuthGrant, scopes: [String], refreshToken: String?, context: AuthorizationServerContext) async throws(OAuthError) -> Response {
        let accessToken: String
        let now = Date()
        do {
            accessToken = try await tokens.issue(for: grant, scopes: scopes, context: context, now: now)
        } catch {
            throw OAuthError(code: "temporarily_unavailable", description: "the access token cannot be signed", status: .serviceUnavailable)
        }
        // The token's own lifetime, which its grant's end (an API key's expiry) may shorten.
        let expiresIn = AccessTokenIssuer.expiry(for: grant, context: context, now: now) - Int(now.timeIntervalSince1970)
        var body: [String: Any] = [
            "access_token": accessToken, "token_type": "Bearer", "expires_in": expiresIn,
            "scope": scopes.joined(separator: " "),
        ]
        if let refreshToken { body["refresh_token"] = refreshToken }
        return OAuthResponse.json(body)
    }

    static func scopes(_ text: String) -> [String] { text.split(separator: " ").map(String.init) }

    /// The form body of a token, revocation or introspection request.
    static func form(_ request: Request) async throws(OAuthError) -> OAuthParameters {
        var request = request
        guard request.headers[.contentType]?.lowercased().hasPrefix("application/x-www-form-urlencoded") == true else {
            throw .invalidRequest("the body must be application/x-www-form-urlencoded")
        }
        guard let body = try? await request.collectBody(upTo: maximumFormSize) else { throw .invalidRequest("the body is too large") }
        return OAuthParameters(encoded: String(buffer: body))
    }

    private func storeCall<T>(_ body: () throws -> T) throws(OAuthError) -> T {
        do {
            return try body()
        } catch {
            throw OAuthError(code: "temporarily_unavailable", description: "the token store cannot be used right now", status: .serviceUnavailable)
        }
    }
}
