import Foundation
import HTTPTypes
import Hummingbird
import TokenStore

/// `POST /oauth/register`: dynamic client registration (RFC 7591), open or gated by an initial access token.
struct ClientRegistrationEndpoint: Sendable {
    static let maximumBodySize = 16 * 1024
    /// `client_credentials` is never registered here: a client nobody vouched for gets tokens only through a user's
    /// login and consent; machine clients are made by an operator (`authctl clients add`).
    static let grantTypes: Set = ["authorization_code", "refresh_token"]

    let store: TokenStore

    func respond(_ request: Request, context: AuthorizationServerContext) async -> Response {
        switch context.settings.registration {
        case .off:
            return OAuthResponse.json(["error": "not_found", "error_description": "dynamic client registration is off"], status: .notFound)
        case .token(_, let expected):
            guard let expected, case .token(let given) = BearerToken.read(from: request.headers),
                constantTimeEquals(Data(given.utf8), Data(expected.utf8))
            else {
                var headers = OAuthResponse.noStoreHeaders
                headers[.wwwAuthenticate] = #"Bearer error="invalid_token""#
                return OAuthResponse.json(
                    ["error": "invalid_token", "error_description": "registration needs a valid initial access token"], status: .unauthorized,
                    headers: headers)
            }
        case .open:
            break
        }
        var request = request
        guard let body = try? await request.collectBody(upTo: Self.maximumBodySize),
            let object = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]
        else {
            return OAuthResponse.json(["error": "invalid_client_metadata", "error_description": "the body must be a JSON object of at most 16 KiB"], status: .badRequest)
        }
        let registration: ClientRegistration
        do {
            registration = try Self.registration(from: object, context: context)
        } catch {
            return error.response
        }
        do {
            let (client, secret) = try store.registerClient(registration)
            var answer: [String: Any] = [
                "client_id": client.id,
                "client_id_issued_at": Int(client.createdAt.timeIntervalSince1970),
                "client_name": client.name,
                "redirect_uris": client.redirectURIs,
                "grant_types": client.grantTypes,
                "response_types": client.allows(grantType: "authorization_code") ? ["code"] : [],
                "token_endpoint_auth_method": client.authMethod,
            ]
            if let scope = client.scope { answer["scope"] = scope }
            if let secret {
                answer["client_secret"] = secret
                answer["client_secret_expires_at"] = 0
            }
            return OAuthResponse.json(answer, status: .created)
        } catch {
            return OAuthResponse.json(["error": "temporarily_unavailable", "error_description": "the client cannot be stored"], status: .serviceUnavailable)
        }
    }

    /// Validates registration metadata; defaults follow RFC 7591 §2 (`authorization_code`, `client_secret_basic`).
    static func registration(from object: [String: Any], context: AuthorizationServerContext) throws(RegistrationError) -> ClientRegistration {
        func strings(_ key: String) throws(RegistrationError) -> [String]? {
            guard let value = object[key] else { return nil }
            guard let list = value as? [String] else { throw .metadata("\(key) must be an array of strings") }
            return list
        }
        let grantTypes = try strings("grant_types") ?? ["authorization_code"]
        if grantTypes.contains("client_credentials") {
            throw .metadata("client_credentials cannot be registered; an operator makes machine clients with `authctl clients add`")
        }
        guard !grantTypes.isEmpty, grantTypes.allSatisfy(Self.grantTypes.contains) else {
            throw .metadata("grant_types may contain \(Self.grantTypes.sorted().joined(separator: ", ")) only")
        }
        let method = object["token_endpoint_auth_method"].map { $0 as? String ?? "" } ?? "client_secret_basic"
        guard ClientAuthentication.methods.contains(method) else {
            throw .metadata("token_endpoint_auth_method must be one of \(ClientAuthentication.methods.joined(separator: ", "))")
        }
        let redirects = try strings("redirect_uris") ?? []
        if grantTypes.contains("authorization_code") {
            guard !redirects.isEmpty else { throw .redirect("redirect_uris is required for the authorization_code grant") }
        }
        guard redirects.count <= 20 else { throw .redirect("at most 20 redirect_uris") }
        for uri in redirects {
            if let problem = RedirectURIRules.problem(uri) { throw .redirect(problem) }
        }
        if let responseTypes = try strings("response_types"), responseTypes != ["code"] {
            throw .metadata("response_types must be [\"code\"]")
        }
        var name = "unnamed client"
        if let value = object["client_name"] {
            guard let text = value as? String, (1...200).contains(text.count) else { throw .metadata("client_name must be 1 to 200 characters") }
            name = text
        }
        var scope: String?
        if let value = object["scope"] {
            guard let text = value as? String else { throw .metadata("scope must be a space-separated string") }
            let unknown = text.split(separator: " ").map(String.init).filter { !context.scopesSupported.contains($0) }
            guard unknown.isEmpty else { throw .metadata("unknown scope(s): \(unknown.joined(separator: " "))") }
            scope = text
        }
        return ClientRegistration(name: name, redirectURIs: redirects, grantTypes: grantTypes, authMethod: method, scope: scope)
    }

    /// Why registration metadata was refused (RFC 7591 §3.2.2).
    enum RegistrationError: Error {
        case redirect(String)
        case metadata(String)

        var response: Response {
            switch self {
            case .redirect(let why): OAuthResponse.json(["error": "invalid_redirect_uri", "error_description": why], status: .badRequest)
            case .metadata(let why): OAuthResponse.json(["error": "invalid_client_metadata", "error_description": why], status: .badRequest)
            }
        }
    }
}
