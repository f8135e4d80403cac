import Foundation
import HTTPTypes
import Hummingbird
import TokenStore

/// How a client proves who it is at the token, revocation and introspection endpoints (RFC 6749 §2.3): HTTP Basic,
/// the secret in the form body, or, for public clients, its client_id alone (PKCE protects their codes).
enum ClientAuthentication {
    static let methods = ["none", "client_secret_basic", "client_secret_post"]

    /// The client the request authenticates as, or an `invalid_client` error that never says which part was wrong.
    static func authenticate(headers: HTTPFields, form: OAuthParameters, store: TokenStore) throws(OAuthError) -> OAuthClient {
        var clientID = form["client_id"]
        var secret = form["client_secret"]
        var method = secret == nil ? "none" : "client_secret_post"
        let usedBasic = headers[.authorization] != nil
        if let authorization = headers[.authorization] {
            guard secret == nil else { throw .invalidRequest("use one client authentication method, not two") }
            guard let (id, password) = basicCredentials(authorization) else {
                throw .invalidClient("malformed Basic credentials", basic: true)
            }
            if let formID = clientID, formID != id { throw .invalidRequest("client_id differs from the authenticated client") }
            clientID = id
            secret = password
            method = "client_secret_basic"
        }
        guard let clientID else { throw .invalidClient("client authentication failed", basic: usedBasic) }
        let client: OAuthClient?
        do {
            client = try store.authenticateClient(id: clientID, secret: secret)
        } catch {
            throw OAuthError(code: "temporarily_unavailable", description: "the token store cannot be read", status: .serviceUnavailable)
        }
        // A confidential client must use the method it registered; a public one must not send a secret. Machine
        // clients registered no method: an operator made them, so either way of sending the secret is theirs.
        guard let client, client.authMethod == method || (client.source == .operator && method != "none") else {
            throw .invalidClient("client authentication failed", basic: usedBasic)
        }
        return client
    }

    /// The authenticated client and the `token` it presents, for revocation and introspection.
    static func presentedToken(_ request: Request, store: TokenStore) async throws(OAuthError) -> (client: OAuthClient, token: String) {
        let form = try await TokenEndpoint.form(request)
        let client = try authenticate(headers: request.headers, form: form, store: store)
        guard let token = form["token"] else { throw .invalidRequest("token is required") }
        return (client, token)
    }

    /// `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
    static func basicCredentials(_ header: String) -> (String, String)? {
        guard header.count > 6, header.prefix(6).lowercased() == "basic " else { return nil }
        guard let data = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
            let decoded = String(data: data, encoding: .utf8), let colon = decoded.firstIndex(of: ":")
        else { return nil }
        func unescape(_ text: Substring) -> String? { text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
        guard let id = unescape(decoded[..<colon]), let secret = unescape(decoded[decoded.index(after: colon)...]), !id.isEmpty else { return nil }
        return (id, secret)
    }
}
