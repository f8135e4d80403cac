/// The `path_context` credential kind: identity read from path captures, trusted only from the route's listed
/// source networks. Everywhere else path captures are constraints checked against another credential.
public struct PathContextAuthenticator: CredentialAuthenticator {
    public let kind = CredentialKind.pathContext

    public init() {}

    public func authenticate(_ request: ForwardedRequest, route: MatchedRoute) async -> AuthenticationOutcome {
        guard let rule = route.route.pathContext, rule.networks.containsAddress(request.clientAddress) else { return .absent }
        guard let subject = route.captures[rule.subjectCapture] else { return .absent }
        let client = rule.clientCapture.flatMap { route.captures[$0] } ?? ""
        return .principal(
            Principal(subject: subject, method: .pathContext, scopes: [], groups: [], client: client, issuer: "", keyID: "", restrictedToRoute: nil))
    }
}
