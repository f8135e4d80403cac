/// An authenticated caller: who it is, how it proved it, and what it may do.
public struct Principal: Sendable, Equatable {
    public var subject: String
    public var method: CredentialKind
    public var scopes: [String]
    public var groups: [String]
    /// The client acting for the subject: the API key's name or the OAuth client id.
    public var client: String
    /// The JWT issuer URL, empty for other kinds.
    public var issuer: String
    /// The API key id, empty for other kinds.
    public var keyID: String
    /// The only route an API key may be used on, if it is restricted.
    public var restrictedToRoute: String?

    public func value(of field: PrincipalField) -> String {
        switch field {
        case .subject: subject
        case .client: client
        }
    }
}

/// What a credential kind concluded about a request.
public enum AuthenticationOutcome: Sendable {
    /// This kind of credential is not in the request: try the next kind.
    case absent
    /// The credential is present but not acceptable: stop and deny. The reason is for logs only.
    case invalid(reason: String)
    /// A dependency (store, JWKS) could not be reached: fail closed with 503.
    case unavailable(reason: String)
    case principal(Principal)
}

/// One credential kind (`api_key`, `jwt`, `path_context`): a new kind is one new conformance and one registration.
public protocol CredentialAuthenticator: Sendable {
    var kind: CredentialKind { get }
    func authenticate(_ request: ForwardedRequest, route: MatchedRoute) async -> AuthenticationOutcome
}
