import HTTPTypes

/// Decides one forwardAuth request: forwarded request → route match → authenticate → authorize → emit.
///
/// Every path that is not a complete, successful pass through all four stages ends in a denial.
public struct DecisionEngine: Sendable {
    public let policy: Policy
    let matcher: RouteMatcher
    let authenticators: [CredentialKind: any CredentialAuthenticator]
    let apiKeyHeader: HTTPField.Name?
    let emitter: IdentityEmitter
    let identityAliases: IdentityHeaderAliases
    /// Turns failed credentials beyond `gateway.failed_credentials` into 429s; nil when off or without a limiter.
    let throttle: FailedCredentialThrottle?

    public init(policy: Policy, authenticators: [any CredentialAuthenticator]) {
        self.init(policy: policy, authenticators: authenticators, failedCredentials: nil)
    }

    /// - Parameter failedCredentials: the per-address buckets of failed credentials; owned by the gateway so they
    ///   outlive policy reloads. Without it (`authctl policy explain`, engines built in tests) nothing is throttled.
    init(policy: Policy, authenticators: [any CredentialAuthenticator], failedCredentials: SourceRateLimiter?) {
        self.policy = policy
        self.matcher = RouteMatcher(routes: policy.routes)
        self.authenticators = Dictionary(authenticators.map { ($0.kind, $0) }, uniquingKeysWith: { first, _ in first })
        self.apiKeyHeader = policy.gateway.apiKeyHeader.flatMap { HTTPField.Name($0) }
        self.emitter = IdentityEmitter(policy: policy)
        self.identityAliases = IdentityHeaderAliases(gateway: policy.gateway)
        if let limit = policy.gateway.failedCredentials, let failedCredentials {
            self.throttle = FailedCredentialThrottle(limit: limit, limiter: failedCredentials)
        } else {
            self.throttle = nil
        }
    }

    public func decide(headers: HTTPFields, peer: IPAddress?) async -> Decision {
        let request: ForwardedRequest
        do {
            request = try ForwardedRequest(headers: headers, peer: peer, trustedProxies: policy.gateway.trustedProxies)
        } catch .untrustedPeer(let address) {
            return .deny(Denial(kind: .untrusted, route: nil, reason: "peer \(address) is not a trusted proxy"))
        } catch {
            return .deny(Denial(kind: .badRequest, route: nil, reason: error.description))
        }
        if let alias = identityAliases.alias(in: headers) {
            return .deny(Denial(kind: .badRequest, route: nil, reason: "header \(alias) is an alias of an identity header"))
        }
        return await decide(request)
    }

    /// Decides a request already read and validated (forwarded by a trusted proxy, or received directly by the
    /// gateway's own reverse proxy): route match → authenticate → authorize → emit, then the failed-credential
    /// throttle, which only ever turns a denial into a 429 (the credential is checked first, so a valid one from a
    /// throttled address is allowed).
    public func decide(_ request: ForwardedRequest) async -> Decision {
        let decision = await decideUnthrottled(request)
        guard let throttle, case .deny(let denial) = decision, denial.failedCredential else { return decision }
        return throttle.admit(denial, from: request.clientAddress)
    }

    private func decideUnthrottled(_ request: ForwardedRequest) async -> Decision {
        let headers = request.headers
        let matched: MatchedRoute
        switch matcher.match(request) {
        case .matched(let route): matched = route
        case .noRoute: return .deny(Denial(kind: .untrusted, route: nil, reason: "no route matches \(request.method) \(request.host)\(request.path)"))
        case .unsafeCapture(let route, let capture):
            // On a path_context route the capture is the identity: an unsafe one is a failed credential.
            return .deny(
                Denial(
                    kind: .badRequest, route: route, reason: "path capture {\(capture)} is not a safe identity value",
                    failedCredential: route.accept.contains(.pathContext)))
        case .ambiguousSegment(let segment):
            return .deny(Denial(kind: .badRequest, route: nil, reason: "path segment '\(segment)' may be read as another route's literal"))
        }
        let route = matched.route

        // Two credentials (Authorization and the key header) could disagree; checking only one would let the
        // other pass unchecked, so the request is refused (RFC 6750 §3.1: more than one method is invalid_request).
        if headers[.authorization] != nil, let apiKeyHeader, headers[apiKeyHeader] != nil {
            return .deny(Denial(kind: .ambiguousCredential, route: route, reason: "both Authorization and \(apiKeyHeader.rawName) are present"))
        }

        var principal: Principal?
        for kind in route.accept {
            guard let authenticator = authenticators[kind] else {
                return .deny(Denial(kind: .unavailable, route: route, reason: "credential kind \(kind.rawValue) is not available"))
            }
            switch await authenticator.authenticate(request, route: matched) {
            case .absent: continue
            case .invalid(let reason): return .deny(Denial(kind: .invalidCredential, route: route, reason: reason, failedCredential: true))
            case .invalidSigned(let reason): return .deny(Denial(kind: .invalidCredential, route: route, reason: reason))
            case .unavailable(let reason): return .deny(Denial(kind: .unavailable, route: route, reason: reason))
            case .principal(let found): principal = found
            }
            break
        }
        guard let principal else {
            let sentCredential = headers[.authorization] != nil || apiKeyHeader.map { headers[$0] != nil } == true
            return .deny(
                sentCredential
                    ? Denial(kind: .invalidCredential, route: route, reason: "credential of a kind route \(route.name) does not accept", failedCredential: true)
                    : Denial(kind: .missingCredential, route: route, reason: "no credential"))
        }
        // HTTP trims header values, so "alice " would be emitted as "alice" while allow-lists and bindings
        // compared "alice ": an identity value with surrounding whitespace is refused, whatever its source.
        if let field = IdentityValue.fieldWithSurroundingWhitespace(in: principal) {
            return .deny(Denial(kind: .invalidCredential, route: route, reason: "\(field) has leading or trailing whitespace", failedCredential: true))
        }

        switch Authorizer.refusal(for: principal, on: matched, from: request) {
        case .insufficientScope(let required)?:
            return .deny(Denial(kind: .insufficientScope(required), route: route, reason: "subject \(principal.subject) lacks scopes"))
        case .forbidden(let reason)?:
            return .deny(Denial(kind: .forbidden, route: route, reason: reason))
        case nil:
            break
        }
        return emitter.emit(principal: principal, route: route)
    }
}
