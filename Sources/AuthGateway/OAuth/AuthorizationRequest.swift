import Foundation
import TokenStore

/// A validated `/authorize` request: a known client, one of its redirect URIs, an S256 challenge, a resource this
/// server issues tokens for and scopes that resource uses. Carried through login and consent.
struct AuthorizationRequest: Codable, Sendable, Equatable {
    var clientID: String
    var clientName: String
    var redirectURI: String
    var codeChallenge: String
    var resource: String
    var scopes: [String]
    var state: String?

    /// The parameters as the client sent them, for the hidden fields of the login form.
    var parameters: [(String, String)] {
        var pairs = [
            ("response_type", "code"), ("client_id", clientID), ("redirect_uri", redirectURI), ("code_challenge", codeChallenge),
            ("code_challenge_method", "S256"), ("resource", resource), ("scope", scopes.joined(separator: " ")),
        ]
        if let state { pairs.append(("state", state)) }
        return pairs
    }
}

/// Why an authorization request cannot go on: always an error page for the user, never a redirect.
///
/// Anyone may register a client with any redirect URI, so a registered URI is not a trusted one: redirecting a
/// request that failed before the user signed in and decided would make the gateway's URL an open redirector
/// for phishing (RFC 9700 §4.11.2). Only the user's own decision (`access_denied`) goes back to the client.
enum AuthorizationFailure: Error, Sendable {
    case page(String)
}

/// Checks `/authorize` parameters against the clients in the store and the current policy.
struct AuthorizationRequestValidator: Sendable {
    let store: TokenStore
    let metadataDocuments: ClientMetadataDocumentFetcher

    static let parameterNames = ["response_type", "client_id", "redirect_uri", "code_challenge", "code_challenge_method", "resource", "scope", "state"]

    func validate(_ parameters: OAuthParameters, context: AuthorizationServerContext) async throws(AuthorizationFailure) -> AuthorizationRequest {
        if let repeated = parameters.repeated.first(where: Self.parameterNames.contains) {
            throw .page("The parameter \(repeated) appears more than once.")
        }
        guard let clientID = parameters["client_id"] else { throw .page("The request names no client (client_id is missing).") }
        let client = try await client(clientID, context: context)
        guard client.revokedAt == nil else { throw .page("This application's access has been revoked.") }
        let redirectURI: String
        if let requested = parameters["redirect_uri"] {
            guard RedirectURIRules.matches(requested, registered: client.redirectURIs) else {
                throw .page("The redirect URI is not one this application registered.")
            }
            redirectURI = requested
        } else if client.redirectURIs.count == 1 {
            redirectURI = client.redirectURIs[0]
        } else {
            throw .page("The request has no redirect_uri.")
        }
        let state = parameters["state"]
        func fail(_ error: String, _ description: String) -> AuthorizationFailure {
            .page("The application sent a request this server cannot accept: \(description) (\(error)).")
        }
        guard parameters["response_type"] == "code" else { throw fail("unsupported_response_type", "response_type must be code") }
        guard client.allows(grantType: "authorization_code") else { throw fail("unauthorized_client", "the client did not register the authorization_code grant") }
        guard let challenge = parameters["code_challenge"] else { throw fail("invalid_request", "code_challenge is required (PKCE)") }
        guard parameters["code_challenge_method"] == "S256" else { throw fail("invalid_request", "code_challenge_method must be S256") }
        guard PKCE.isWellFormedChallenge(challenge) else { throw fail("invalid_request", "code_challenge is not a base64url SHA-256 value") }
        guard let resource = parameters["resource"] else { throw fail("invalid_target", "resource is required (RFC 8707)") }
        guard let resourceScopes = context.resources[resource] else { throw fail("invalid_target", "this server issues no tokens for that resource") }
        let allowed = client.scope.map { Set($0.split(separator: " ").map(String.init)) }
        var scopes = parameters["scope"].map { $0.split(separator: " ").map(String.init) } ?? resourceScopes.filter { allowed?.contains($0) ?? true }
        scopes = scopes.reduce(into: []) { if !$0.contains($1) { $0.append($1) } }
        if let unknown = scopes.first(where: { !resourceScopes.contains($0) }) { throw fail("invalid_scope", "scope \(unknown) is not used by this resource") }
        if let allowed, let extra = scopes.first(where: { !allowed.contains($0) }) { throw fail("invalid_scope", "the client may not ask for scope \(extra)") }
        return AuthorizationRequest(
            clientID: client.id, clientName: client.name, redirectURI: redirectURI, codeChallenge: challenge, resource: resource, scopes: scopes,
            state: state)
    }

    private func client(_ clientID: String, context: AuthorizationServerContext) async throws(AuthorizationFailure) -> OAuthClient {
        if ClientMetadataDocumentFetcher.isMetadataDocumentURL(clientID) {
            guard context.settings.clientMetadataDocuments else { throw .page("This server does not accept client metadata documents.") }
            do {
                return try await metadataDocuments.client(for: clientID, allowPrivateHosts: context.settings.allowPrivateMetadataHosts)
            } catch {
                // Generic on purpose (issue 11 finding 6): the reason, which may name internal addresses, is logged.
                throw .page(error.description)
            }
        }
        do {
            guard let client = try store.client(id: clientID) else { throw AuthorizationFailure.page("The application is not known to this server.") }
            return client
        } catch let failure as AuthorizationFailure {
            throw failure
        } catch {
            throw .page("The server cannot read its clients right now. Try again later.")
        }
    }
}

extension AuthorizationFailure {
    /// The URL to send the browser to for a redirectable failure.
    static func redirectURL(_ uri: String, parameters: [(String, String)]) -> String {
        guard var components = URLComponents(string: uri) else { return uri }
        let added = OAuthParameters.encode(parameters)
        components.percentEncodedQuery = [components.percentEncodedQuery, added].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: "&")
        return components.string ?? uri
    }
}
