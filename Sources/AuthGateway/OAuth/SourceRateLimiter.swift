import Foundation
import HTTPTypes
import Hummingbird
import Synchronization

/// Token buckets per (limit, source address): each address may spend `count` requests at once and gets them back
/// at `count / period`. Memory is bounded: at `capacity` buckets, full (idle) ones are dropped, and if every bucket
/// is still in use they are all forgotten rather than grown.
final class SourceRateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    let capacity: Int
    private let buckets = Mutex<[String: Bucket]>([:])

    init(capacity: Int = 10_000) {
        self.capacity = capacity
    }

    /// Spends one request of `source` under `limit` named `name`: nil to go on, or how long to wait.
    func take(_ name: String, source: String, limit: RateLimit, now: ContinuousClock.Instant = .now) -> Duration? {
        let rate = Double(limit.count) / limit.period
        let burst = Double(limit.count)
        let key = name + " " + source
        return buckets.withLock { buckets in
            var bucket = buckets[key] ?? Bucket(tokens: burst, updated: now)
            let elapsed = now - bucket.updated
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket.tokens = min(burst, bucket.tokens + max(0, seconds) * rate)
            bucket.updated = now
            guard bucket.tokens >= 1 else {
                buckets[key] = bucket
                return .seconds((1 - bucket.tokens) / rate)
            }
            bucket.tokens -= 1
            if buckets[key] == nil, buckets.count >= capacity {
                // A bucket back at its burst is as good as none: drop those first.
                buckets = buckets.filter { _, kept in
                    let idle = now - kept.updated
                    return kept.tokens + (Double(idle.components.seconds) * rate) < burst
                }
                if buckets.count >= capacity { buckets.removeAll(keepingCapacity: true) }
            }
            buckets[key] = bucket
            return nil
        }
    }

    var count: Int { buckets.withLock { $0.count } }
}

/// What the limits of one `/oauth/` request need: who sent it (the trusted `X-Forwarded-For` client, else the
/// peer), the current limits and the shared buckets. Set for the duration of the request, so a handler can ask
/// `RateLimitScope.current?.exceeded(...)` without the address travelling through every signature.
struct RateLimitScope: Sendable {
    @TaskLocal static var current: RateLimitScope?

    let source: String
    let limits: RateLimits
    let limiter: SourceRateLimiter

    /// nil to go on, or how long the source must wait.
    func exceeded(_ name: String, _ limit: KeyPath<RateLimits, RateLimit>) -> Duration? {
        limiter.take(name, source: source, limit: limits[keyPath: limit])
    }

    /// The `Retry-After` value: whole seconds, at least 1.
    static func retryAfter(_ wait: Duration) -> String {
        "\(max(1, Int((Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18).rounded(.up))))"
    }

    /// A JSON 429 for the API endpoints.
    static func jsonResponse(_ wait: Duration, what: String) -> Response {
        var headers = OAuthResponse.noStoreHeaders
        headers[.retryAfter] = retryAfter(wait)
        return OAuthResponse.json(
            ["error": "too_many_requests", "error_description": "too many \(what) from your address; retry in \(retryAfter(wait)) s"],
            status: .tooManyRequests, headers: headers)
    }

    /// An HTML 429 for the pages a browser sees.
    static func pageResponse(_ wait: Duration, what: String) -> Response {
        var response = AuthorizationPages.response(
            AuthorizationPages.error("Too many \(what) from your address. Try again in \(retryAfter(wait)) seconds."), status: .tooManyRequests)
        response.headers[.retryAfter] = retryAfter(wait)
        return response
    }
}
