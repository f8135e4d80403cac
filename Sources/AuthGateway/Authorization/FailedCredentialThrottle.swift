/// Slows guessing at the decision endpoints: failed credentials from one client address beyond `gateway.
/// failed_credentials` (a token bucket per address, IPv6 by /64, from the shared `SourceRateLimiter`) are answered
/// `429` with `Retry-After` instead of `401`.
///
/// It runs after the credential was checked and looks only at denials the engine marked as failed credentials, so
/// a valid credential from a throttled address is allowed as always, a request without a credential (the 401 an
/// MCP client needs to discover OAuth) never counts, and a genuine token that merely expired still gets its 401 (a
/// client must be told to refresh, not to wait). Unknown, revoked and expired keys count alike and get one answer,
/// so the 429 says nothing about which keys exist.
struct FailedCredentialThrottle: Sendable {
    let limit: RateLimit
    let limiter: SourceRateLimiter

    /// The bucket name carries the limit: after a policy reload that changes it, addresses start on the new one.
    private var name: String { "failed_credentials \(limit)" }

    /// `denial`, or a 429 when `client` has no failure left in its budget. Only failures spend from it.
    func admit(_ denial: Denial, from client: IPAddress?) -> Decision {
        guard denial.failedCredential else { return .deny(denial) }
        let source = SourceRateLimiter.sourceKey(client)
        guard let wait = limiter.take(name, source: source, limit: limit) else { return .deny(denial) }
        let seconds = Int(RateLimitScope.retryAfter(wait)) ?? 1
        return .deny(
            Denial(
                kind: .throttled(retryAfter: seconds), route: denial.route,
                reason: "too many failed credentials from \(source) (failed_credentials \(limit)): \(denial.reason)"))
    }
}
