@testable import AuthGateway
import Foundation
import Synchronization
import HTTPTypes
import HummingbirdTesting
import Testing
import TokenStore

/// Issue 11 finding 6: metadata-document fetches resolve names off Swift's cooperative pool with a timeout, say
/// nothing about what a name resolves to, remember failures for a minute and run only a few at a time.
@Suite("Finding 6: client metadata fetches: no DNS oracle, no stalled pool")
struct Finding6MetadataFetchTests {
    static func authorizeURI(clientID: String) -> String {
        "/oauth/authorize?" + OAuthParameters.encode([
            ("response_type", "code"), ("client_id", clientID), ("redirect_uri", "https://app.example.com/cb"),
            ("code_challenge", PKCE.challenge(for: OAuthRulesTests.rfcVerifier)), ("code_challenge_method", "S256"),
            ("resource", OAuthTokenEndpointTests.resource),
        ])
    }

    @Test("finding 6: the error page for a name that resolves to an internal address does not say the address")
    func noDNSOracle() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        try await fixture.withLiveServer { http in
            let page = try await http.execute(uri: Self.authorizeURI(clientID: "https://localhost/oauth/client.json"), method: .get) { response in
                (response.status, String(buffer: response.body))
            }
            #expect(page.0 == .badRequest)
            #expect(!page.1.contains("127.0.0.1") && !page.1.contains("::1") && !page.1.contains("resolves"), "\(page.1)")
            #expect(page.1.contains("metadata document"))
        }
    }
}

/// The resolver and the fetch guard on their own.
extension Finding6MetadataFetchTests {
    /// Counts lookups; with `hold`, each one keeps its thread until `release()`, as a hung name server would.
    final class CountingLookup: Sendable {
        let calls = Mutex(0)
        let finished = Mutex(false)
        let hold: Bool
        private let gate = DispatchSemaphore(value: 0)
        init(hold: Bool = false) { self.hold = hold }

        func lookup(_ host: String) -> [IPAddress]? {
            calls.withLock { $0 += 1 }
            if hold { _ = gate.wait(timeout: .now() + 60) }
            finished.withLock { $0 = true }
            return nil
        }

        func release() { gate.signal() }
    }

    @Test("finding 6: a lookup that hangs is given up after the timeout without holding the caller's thread")
    func resolutionTimeout() async throws {
        let counter = CountingLookup(hold: true)
        defer { counter.release() }
        let resolver = HostResolver(threads: 1, timeout: .milliseconds(200), lookup: counter.lookup)
        await #expect(throws: HostResolver.Failure.timedOut) { try await resolver.resolve("slow.example") }
        // The caller has its answer while the lookup still hangs on the resolver's own thread.
        #expect(counter.finished.withLock { $0 } == false)
        // Its one thread is still blocked: another lookup is refused at once instead of queueing behind it.
        await #expect(throws: HostResolver.Failure.busy) { try await resolver.resolve("other.example") }
    }

    @Test("finding 6: a URL whose fetch failed is not fetched again within a minute, and the page stays generic")
    func failureCached() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let counter = CountingLookup()
        let fetcher = ClientMetadataDocumentFetcher(
            store: fixture.store, resolver: HostResolver(threads: 1, timeout: .seconds(2), lookup: counter.lookup))
        let url = "https://internal.example/oauth/client.json"
        for _ in 0..<3 {
            await #expect(throws: ClientMetadataDocumentFetcher.Refusal.unusable) {
                try await fetcher.client(for: url, allowPrivateHosts: false)
            }
        }
        #expect(counter.calls.withLock { $0 } == 1)
        let guardrail = MetadataFetchGuard(failureTTL: .seconds(60), capacity: 4)
        let now = ContinuousClock.now
        guardrail.recordFailure(url, now: now)
        #expect(guardrail.recentlyFailed(url, now: now + .seconds(59)))
        #expect(!guardrail.recentlyFailed(url, now: now + .seconds(61)))
    }

    @Test("finding 6: the failure cache is bounded")
    func failureCacheBounded() {
        let guardrail = MetadataFetchGuard(failureTTL: .seconds(60), capacity: 100)
        for index in 0..<10_000 { guardrail.recordFailure("https://x\(index).example/c.json") }
        #expect(guardrail.remembered <= 100)
    }

    @Test("finding 6: at most N fetches run at once; one more is refused as busy, not queued")
    func fetchesInFlight() async throws {
        let fixture = try GatewayFixture(policy: OAuthEndpointTests.policy)
        let limits = MetadataFetchGuard(maximumInFlight: 2)
        #expect(limits.begin() && limits.begin())
        let fetcher = ClientMetadataDocumentFetcher(
            store: fixture.store, resolver: HostResolver(threads: 1, timeout: .seconds(1), lookup: { _ in nil }), limits: limits)
        await #expect(throws: ClientMetadataDocumentFetcher.Refusal.busy) {
            try await fetcher.client(for: "https://app.example.com/oauth/client.json", allowPrivateHosts: false)
        }
        limits.end()
        await #expect(throws: ClientMetadataDocumentFetcher.Refusal.unusable) {
            try await fetcher.client(for: "https://app.example.com/oauth/client.json", allowPrivateHosts: false)
        }
    }
}
