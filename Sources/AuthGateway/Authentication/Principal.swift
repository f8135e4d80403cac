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

/// The rule that identity values (subject, client, groups, scopes) never start or end with whitespace.
///
/// HTTP trims spaces and tabs around header values, so a subject "alice " is emitted as `alice` while allow-lists
/// and `bind` would compare "alice "; other whitespace (no-break space, line separators) is just as confusing.
public enum IdentityValue {
    /// Whether `value` starts or ends with a Unicode whitespace character.
    public static func hasSurroundingWhitespace(_ value: some StringProtocol) -> Bool {
        guard let first = value.unicodeScalars.first, let last = value.unicodeScalars.last else { return false }
        return isWhitespace(first) || isWhitespace(last)
    }

    /// The name of the first identity value of `principal` with surrounding whitespace, or nil.
    static func fieldWithSurroundingWhitespace(in principal: Principal) -> String? {
        if hasSurroundingWhitespace(principal.subject) { return "subject" }
        if hasSurroundingWhitespace(principal.client) { return "client" }
        if principal.groups.contains(where: hasSurroundingWhitespace) { return "a group" }
        if principal.scopes.contains(where: hasSurroundingWhitespace) { return "a scope" }
        return nil
    }

    private static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        // ASCII first: no Unicode property lookup on the common path.
        scalar.value < 0x80 ? (scalar == " " || (0x09...0x0D).contains(scalar.value)) : scalar.properties.isWhitespace
    }
}

/// What a credential kind concluded about a request.
public enum AuthenticationOutcome: Sendable {
    /// This kind of credential is not in the request: try the next kind.
    case absent
    /// The credential is present but not acceptable: stop and deny. The reason is for logs only.
    case invalid(reason: String)
    /// A token whose signature verified, but that is not acceptable here (expired, not yet valid, another audience,
    /// a grant no longer active): deny as `invalid`, but it is no guess (the client holds a token the issuer really
    /// signed), so it never counts toward `gateway.failed_credentials` and is always answered 401, which tells the
    /// client to refresh.
    case invalidSigned(reason: String)
    /// A dependency (store, JWKS) could not be reached: fail closed with 503.
    case unavailable(reason: String)
    case principal(Principal)
}

/// One credential kind (`api_key`, `jwt`, `path_context`): a new kind is one new conformance and one registration.
public protocol CredentialAuthenticator: Sendable {
    var kind: CredentialKind { get }
    func authenticate(_ request: ForwardedRequest, route: MatchedRoute) async -> AuthenticationOutcome
}
