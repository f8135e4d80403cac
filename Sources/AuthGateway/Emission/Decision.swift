import HTTPTypes

/// The answer to one forwardAuth request.
public enum Decision: Sendable {
    case allow(Allow)
    case deny(Denial)

    /// An allowed request: the headers Traefik copies onto the request before it reaches the backend.
    public struct Allow: Sendable {
        public let principal: Principal
        public let route: RoutePolicy
        /// Every identity header (empty values included) plus the backend credential, if any.
        public let headers: [HTTPField]
    }
}

/// A refused request, rendered as a 401/403 challenge or another error status with a small JSON body.
public struct Denial: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// 401 without `error`: no credential was sent (RFC 6750 §3.1).
        case missingCredential
        /// 401 `invalid_token`: a credential was sent and refused. One answer for unknown, revoked and expired.
        case invalidCredential
        /// 403 `insufficient_scope` with the scopes the route needs.
        case insufficientScope([String])
        /// 403 for every other authorization failure.
        case forbidden
        /// 400: the forwarded request is malformed or ambiguous.
        case badRequest
        /// 400 `invalid_request`: the request carries more than one credential.
        case ambiguousCredential
        /// 403: the peer is not a trusted proxy, or no route matches.
        case untrusted
        /// 503: a dependency needed to decide is down; never an allow.
        case unavailable
        /// 429 with `Retry-After` (seconds): too many failed credentials from the client's address
        /// (`gateway.failed_credentials`). One answer whatever the credential was, so it tells nothing about it.
        case throttled(retryAfter: Int)
    }

    public let kind: Kind
    /// The matched route, when there is one: its resource names the protected resource metadata.
    public let route: RoutePolicy?
    /// Why, for the log line only; never sent to the client.
    public let reason: String
    /// The request carried a credential that proves nothing (unknown, revoked or expired key, a JWT whose signature
    /// does not verify, an unsafe path-context identity): it counts toward `gateway.failed_credentials`.
    var failedCredential = false

    public static func == (lhs: Denial, rhs: Denial) -> Bool {
        lhs.kind == rhs.kind && lhs.route?.name == rhs.route?.name && lhs.reason == rhs.reason
    }
}
