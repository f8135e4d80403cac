import Foundation
import HTTPTypes
import Hummingbird
import Synchronization

/// Token buckets per (limit, source address): each address may spend `count` requests at once and gets them back
/// at `count / period`. Memory is bounded: at `capacity` buckets, full (idle) ones are dropped, and if every bucket
/// is still in use, new sources share one overflow bucket per limit. Forgetting the busy buckets instead would let
/// whoever fills the table with fresh addresses reset every count, their own included.
final class SourceRateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
        /// Requests regained per second and the most it holds: buckets of different limits share one table.
        let rate: Double
        let burst: Double
    }

    let capacity: Int
    private let buckets = Mutex<[String: Bucket]>([:])
    /// When a full table was last searched for idle buckets: at most one search a second, because each one reads
    /// the whole table under the lock, and a flood from fresh addresses (failed credentials from many IPv6 /64s)
    /// would otherwise pay for one on every request.
    private let lastSweep = Mutex<ContinuousClock.Instant?>(nil)

    init(capacity: Int = 10_000) {
        self.capacity = capacity
    }

    /// Spends one request of `source` under `limit` named `name`: nil to go on, or how long to wait.
    func take(_ name: String, source: String, limit: RateLimit, now: ContinuousClock.Instant = .now) -> Duration? {
        let rate = Double(limit.count) / limit.period
        let burst = Double(limit.count)
        let key = name + " " + source
        return buckets.withLock { buckets in
            let bucket = buckets[key] ?? Bucket(tokens: burst, updated: now, rate: rate, burst: burst)
            if buckets[key] == nil, buckets.count >= capacity, sweepDue(now) {
                // A bucket back at its burst is as good as none: drop those first.
                buckets = buckets.filter { _, kept in
                    let idle = now - kept.updated
                    return kept.tokens + (Double(idle.components.seconds) * kept.rate) < kept.burst
                }
            }
            if buckets[key] == nil, buckets.count >= capacity {
                let overflow = name + " overflow"
                return spend(&buckets, overflow, buckets[overflow] ?? Bucket(tokens: burst, updated: now, rate: rate, burst: burst), now: now)
            }
            return spend(&buckets, key, bucket, now: now)
        }
    }

    /// Whether a full table may be searched for idle buckets now (called under the buckets' lock).
    private func sweepDue(_ now: ContinuousClock.Instant) -> Bool {
        lastSweep.withLock { last in
            if let last, now - last < .seconds(1), now >= last { return false }
            last = now
            return true
        }
    }

    /// Refills `bucket` up to `now`, takes one request from it if it can and stores it under `key`.
    private func spend(_ buckets: inout [String: Bucket], _ key: String, _ bucket: Bucket, now: ContinuousClock.Instant) -> Duration? {
        var bucket = bucket
        let elapsed = now - bucket.updated
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        bucket.tokens = min(bucket.burst, bucket.tokens + max(0, seconds) * bucket.rate)
        bucket.updated = now
        defer { buckets[key] = bucket }
        guard bucket.tokens >= 1 else { return .seconds((1 - bucket.tokens) / bucket.rate) }
        bucket.tokens -= 1
        return nil
    }

    /// The key one source is limited under: an IPv4 address, or the /64 network of an IPv6 address (one host or
    /// subscriber is normally given a whole /64, so its single addresses cost nothing to change).
    static func sourceKey(_ address: IPAddress?) -> String {
        guard let address else { return "unknown" }
        guard address.bytes.count == 16 else { return address.description }
        return address.bytes[0..<8].map { String($0, radix: 16) }.joined(separator: ".") + "/64"
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
