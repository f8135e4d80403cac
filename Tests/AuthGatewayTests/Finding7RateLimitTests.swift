@testable import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import TokenStore

/// Issue 11 finding 7: per-source-address limits (the trusted `X-Forwarded-For` client) on registration, sign-in
/// and metadata-document fetches: 429 with `Retry-After`, settings in the policy, bounded memory.
@Suite("Finding 7: rate limits on registration, sign-in and metadata fetches")
struct Finding7RateLimitTests {
    /// 10 an hour rather than the default 10 a minute: a slow run (bcrypt under load) must not refill a bucket
    /// between the 10th and the 11th request. The defaults have their own test.
    static let policy: String = {
        let limited = OAuthEndpointTests.policy.replacingOccurrences(
            of: "builtin: { kind: builtin }",
            with: "builtin: { kind: builtin, rate_limits: { registration: 10/h, sign_in: 10/h, metadata_fetch: 10/h } }")
        precondition(limited != OAuthEndpointTests.policy)
        return limited
    }()

    static func from(_ address: String, _ headers: HTTPFields = [:]) -> HTTPFields {
        var headers = headers
        headers[HTTPField.Name("X-Forwarded-For")!] = address
        return headers
    }

    @Test("finding 7: the 11th registration in the period from one address is 429 with Retry-After; another address goes on")
    func registration() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        try await fixture.withLiveServer { http in
            func register(_ address: String) async throws -> TestResponse {
                try await http.execute(
                    uri: "/oauth/register", method: .post, headers: Self.from(address, [.contentType: "application/json"]),
                    body: .init(string: OAuthTokenEndpointTests.publicRegistration)) { $0 }
            }
            for _ in 0..<10 { #expect(try await register("198.51.100.7").status == .created) }
            let limited = try await register("198.51.100.7")
            #expect(limited.status == .tooManyRequests)
            #expect(Int(limited.header("Retry-After") ?? "") ?? 0 > 60)
            #expect(limited.json["error"] as? String != nil)
            #expect(try await register("198.51.100.8").status == .created)
            #expect(try fixture.store.listClients().count == 11)
        }
    }

    @Test("finding 7: the 11th sign-in attempt in the period from one address is 429 with Retry-After, before any password check")
    func signIn() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: OAuthTokenEndpointTests.resource, scope: nil)
        try await fixture.withLiveServer { http in
            let page = try await flow.open(http)
            func attempt(_ index: Int) async throws -> TestResponse {
                var headers: HTTPFields = Self.from("203.0.113.9", [.contentType: "application/x-www-form-urlencoded", .cookie: page.cookie])
                headers[.contentType] = "application/x-www-form-urlencoded"
                let fields = page.fields + [("username", "user\(index)"), ("password", "wrong password")]
                return try await http.execute(uri: "/oauth/authorize", method: .post, headers: headers, body: .init(string: OAuthParameters.encode(fields))) { $0 }
            }
            for index in 0..<10 { #expect(try await attempt(index).status == .unauthorized) }
            let limited = try await attempt(10)
            #expect(limited.status == .tooManyRequests)
            #expect(Int(limited.header("Retry-After") ?? "") ?? 0 > 60)
        }
    }

    @Test("finding 7: metadata-document fetches are limited per address")
    func metadataFetch() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        try await fixture.withLiveServer { http in
            func authorize(_ index: Int) async throws -> TestResponse {
                // Distinct private literals: refused at once, without DNS, and not cached under one URL.
                try await http.execute(
                    uri: Finding6MetadataFetchTests.authorizeURI(clientID: "https://10.9.8.\(index)/client.json"), method: .get,
                    headers: Self.from("192.0.2.44")) { $0 }
            }
            for index in 0..<10 { #expect(try await authorize(index).status == .badRequest) }
            let limited = try await authorize(10)
            #expect(limited.status == .tooManyRequests)
            #expect(Int(limited.header("Retry-After") ?? "") ?? 0 > 60)
        }
    }
}

/// The policy form and the limiter's memory.
extension Finding7RateLimitTests {
    @Test("finding 7: rate_limits in the builtin issuer set each limit; defaults are 10 a minute")
    func policySettings() throws {
        let defaults = try OAuthPolicyTests.builtin("  self:\n    kind: builtin\n")
        #expect(defaults.authorizationServer?.rateLimits.registration == RateLimit(count: 10, period: 60))
        #expect(defaults.authorizationServer?.rateLimits.signIn == RateLimit(count: 10, period: 60))
        let set = try OAuthPolicyTests.builtin("  self:\n    kind: builtin\n    rate_limits: { registration: 2/min, sign_in: 5/h, metadata_fetch: 1/s }\n")
        let limits = try #require(set.authorizationServer?.rateLimits)
        #expect(limits.registration == RateLimit(count: 2, period: 60))
        #expect(limits.signIn == RateLimit(count: 5, period: 3600))
        #expect(limits.metadataFetch == RateLimit(count: 1, period: 1))
    }

    @Test("finding 7: a bad rate limit is refused with its line", arguments: [
        ("rate_limits: { registration: 10 }", "registration must be a count per s, min or h"),
        ("rate_limits: { sign_in: 0/min }", "sign_in must be a count per s, min or h"),
        ("rate_limits: { sign_in: 10/day }", "sign_in must be a count per s, min or h"),
        ("rate_limits: { login: 10/min }", "unknown key 'login'"),
    ])
    func badSetting(_ testCase: (String, String)) throws {
        let yaml = OAuthPolicyTests.policy("  self:\n    kind: builtin\n    \(testCase.0)\n")
        let error = try #require(throws: PolicyLoadError.self) { try PolicyLoader.load(yaml: yaml, file: "bad.yaml", environment: [:]) }
        let matching = error.errors.filter { $0.message.contains(testCase.1) }
        #expect(matching.first?.line == 7, "\(error.description)")
    }

    @Test("finding 7: the limiter keeps at most its capacity of addresses")
    func boundedMemory() {
        let limiter = SourceRateLimiter(capacity: 100)
        let limit = RateLimit(count: 10, period: 60)
        for index in 0..<10_000 { _ = limiter.take("registration", source: "10.0.\(index / 256).\(index % 256)", limit: limit) }
        #expect(limiter.count <= 100 + 1, "the capacity, and one overflow bucket for the limit")
    }

    @Test("finding 7: a table filled with fresh addresses neither resets a limited address nor lets new ones through unlimited")
    func fullTableKeepsCounts() {
        let limiter = SourceRateLimiter(capacity: 100)
        let limit = RateLimit(count: 2, period: 60)
        let start = ContinuousClock.now
        #expect(limiter.take("sign_in", source: "attacker", limit: limit, now: start) == nil)
        #expect(limiter.take("sign_in", source: "attacker", limit: limit, now: start) == nil)
        for index in 0..<300 { _ = limiter.take("sign_in", source: "fresh-\(index)", limit: limit, now: start) }
        #expect(limiter.take("sign_in", source: "attacker", limit: limit, now: start) != nil, "the flood reset the attacker's own count")
        #expect(limiter.take("sign_in", source: "fresh-1000", limit: limit, now: start) != nil, "sources past the capacity share one bucket")
    }

    @Test("finding 7: IPv6 sources are limited by their /64, IPv4 by the address", arguments: [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true),
        ("2001:db8:1:2::1", "2001:db8:1:3::1", false),
        ("192.0.2.1", "192.0.2.2", false),
        ("::ffff:192.0.2.1", "192.0.2.1", true),
    ])
    func sourceKeys(testCase: (String, String, Bool)) {
        let first = SourceRateLimiter.sourceKey(IPAddress(testCase.0))
        let second = SourceRateLimiter.sourceKey(IPAddress(testCase.1))
        #expect((first == second) == testCase.2, "\(first) / \(second)")
    }

    @Test("finding 7: a limited address gets its requests back over the period")
    func refill() {
        let limiter = SourceRateLimiter()
        let limit = RateLimit(count: 2, period: 60)
        let start = ContinuousClock.now
        #expect(limiter.take("x", source: "a", limit: limit, now: start) == nil)
        #expect(limiter.take("x", source: "a", limit: limit, now: start) == nil)
        let wait = limiter.take("x", source: "a", limit: limit, now: start)
        #expect(wait != nil && wait! <= .seconds(30))
        #expect(limiter.take("x", source: "a", limit: limit, now: start + .seconds(31)) == nil)
    }
}
