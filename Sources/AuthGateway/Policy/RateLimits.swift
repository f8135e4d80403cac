import Foundation

/// How often one source address may do something: `count` times per `period` (written `10/min` in the policy).
public struct RateLimit: Sendable, Equatable, CustomStringConvertible {
    public var count: Int
    public var period: TimeInterval

    public init(count: Int, period: TimeInterval) {
        self.count = count
        self.period = period
    }

    /// `N/s`, `N/min` or `N/h` (also `second`, `minute`, `hour`), N from 1 to 1 000 000.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        let units: [String: TimeInterval] = ["s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600]
        guard parts.count == 2, let count = Int(parts[0]), (1...1_000_000).contains(count), let period = units[parts[1]] else { return nil }
        self.init(count: count, period: period)
    }

    public var description: String { "\(count)/\(period == 1 ? "s" : period == 60 ? "min" : "h")" }
}

/// The built-in authorization server's per-source-address limits (`rate_limits:` of the builtin issuer), on the
/// endpoints where an unauthenticated request costs a store write, a bcrypt check or an outbound fetch.
public struct RateLimits: Sendable, Equatable {
    /// `POST /oauth/register`: each one is a store write that empties the decision caches.
    public var registration = RateLimit(count: 10, period: 60)
    /// The login form's POST: each one is a bcrypt check.
    public var signIn = RateLimit(count: 10, period: 60)
    /// Client ID Metadata Document fetches started by `/oauth/authorize`.
    public var metadataFetch = RateLimit(count: 10, period: 60)

    public init() {}
}
