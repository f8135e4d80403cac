@testable import AuthGateway
import Foundation
import Testing
@testable import TokenStore

/// The API key cache may make lookups cheap but must never change an answer.
@Suite("Credential cache")
struct CredentialCacheTests {
    static let key = APIKey(
        id: "key_1", digest: Data([1]), displayPrefix: "agk_", name: "n", subject: "alice", scopes: "a", route: nil,
        createdAt: Date(), expiresAt: nil, revokedAt: nil, lastUsedAt: nil, rotatedFrom: nil)

    @Test("an entry is served only under the store version it was read at")
    func versionChangeEmptiesTheCache() {
        let cache = APIKeyCache()
        _ = cache.lookup(Data([1]), version: 7)
        cache.store(Self.key, for: Data([1]), version: 7)
        #expect(cache.lookup(Data([1]), version: 7) == .some(Self.key))
        #expect(cache.lookup(Data([1]), version: 8) == nil)
        #expect(cache.lookup(Data([1]), version: 8) == nil)
    }

    @Test("entries age out, unknown keys sooner than known ones")
    func entriesAgeOut() {
        let cache = APIKeyCache(ttl: .seconds(30), negativeTTL: .seconds(2))
        let start = ContinuousClock.now
        _ = cache.lookup(Data([1]), version: 1, now: start)
        cache.store(Self.key, for: Data([1]), version: 1, now: start)
        cache.store(nil, for: Data([2]), version: 1, now: start)
        #expect(cache.lookup(Data([2]), version: 1, now: start + .seconds(1)) == .some(nil))
        #expect(cache.lookup(Data([2]), version: 1, now: start + .seconds(3)) == nil)
        #expect(cache.lookup(Data([1]), version: 1, now: start + .seconds(29)) == .some(Self.key))
        #expect(cache.lookup(Data([1]), version: 1, now: start + .seconds(31)) == nil)
    }

    @Test("the cache is emptied rather than grown past its capacity")
    func boundedCapacity() {
        let cache = APIKeyCache(capacity: 2)
        _ = cache.lookup(Data([0]), version: 1)
        for byte in UInt8(1)...3 { cache.store(nil, for: Data([byte]), version: 1) }
        #expect(cache.lookup(Data([1]), version: 1) == nil)
        #expect(cache.lookup(Data([3]), version: 1) == .some(nil))
    }

    @Test("a cached key valid for one route never passes another")
    func cachedKeyKeepsRouteRestriction() async throws {
        let fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes), environment: ["TRELLO_TOKEN": "t"])
        let (key, _) = try fixture.issueKey(scopes: ["ffmpeg", "trello"], route: "trello")
        try await fixture.withLiveServer { client in
            for _ in 0..<3 {
                try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/trello/x", extra: [("Authorization", "Bearer \(key)")])) { #expect($0.status == .ok) }
                try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(key)")])) { #expect($0.status == .forbidden) }
            }
        }
    }

    @Test("a key revoked by authctl in another process is refused once the stated delay has passed, cache or not")
    func crossProcessRevocation() async throws {
        let fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes), environment: ["TRELLO_TOKEN": "t"])
        let (key, id) = try fixture.issueKey(scopes: ["ffmpeg"])
        try await fixture.withLiveServer { client in
            let headers = forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(key)")])
            for _ in 0..<3 { try await client.execute(uri: "/auth", method: .get, headers: headers) { #expect($0.status == .ok) } }
            let revoked = try ProcessRunner.run("authctl", ["--db", fixture.store.path, "revoke-key", id])
            #expect(revoked.status == 0, "\(revoked.stderr)")
            try await Task.sleep(for: TokenStore.externalChangeDelay)
            try await client.execute(uri: "/auth", method: .get, headers: headers) { #expect($0.status == .unauthorized) }
        }
    }

    @Test("a key revoked through the gateway's own store is refused by the very next request")
    func inProcessRevocation() async throws {
        let fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes), environment: ["TRELLO_TOKEN": "t"])
        let (key, id) = try fixture.issueKey(scopes: ["ffmpeg"])
        try await fixture.withLiveServer { client in
            let headers = forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(key)")])
            for _ in 0..<3 { try await client.execute(uri: "/auth", method: .get, headers: headers) { #expect($0.status == .ok) } }
            _ = try fixture.store.revokeKey(id: id)
            try await client.execute(uri: "/auth", method: .get, headers: headers) { #expect($0.status == .unauthorized) }
        }
    }

    @Test("the store's change counter moves at once for its own commits and within the stated delay for another connection's")
    func changeCounterBound() async throws {
        let fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes), environment: ["TRELLO_TOKEN": "t"])
        let store = fixture.store
        let start = try store.changeCounter()
        _ = try store.issueKey(APIKeyRequest(subject: "alice", name: "n", scopes: ["ffmpeg"]))
        let afterOwn = try store.changeCounter()
        #expect(afterOwn != start)
        // Another connection to the same file, as authctl in another process would have.
        let other = try TokenStore(path: store.path)
        _ = try other.issueKey(APIKeyRequest(subject: "bob", name: "m", scopes: ["ffmpeg"]))
        try await Task.sleep(for: TokenStore.externalChangeDelay)
        #expect(try store.changeCounter() != afterOwn)
    }

    @Test("a cached key record is still checked for expiry and revocation on every request")
    func cachedRecordIsRechecked() async throws {
        let fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes), environment: ["TRELLO_TOKEN": "t"])
        let secret = "agk_" + String(repeating: "ab", count: 32)
        let digest = APIKeySecret.digest(of: secret)
        let route = try #require(fixture.gateway.engine.policy.routes.first { $0.name == "ffmpeg" })
        let request = try ForwardedRequest(
            headers: forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(secret)")]), peer: IPAddress("127.0.0.1"),
            trustedProxies: [IPNetwork("127.0.0.1/32")!])
        var expired = Self.key
        expired.digest = digest
        expired.expiresAt = Date().addingTimeInterval(-1)
        var revoked = Self.key
        revoked.digest = digest
        revoked.revokedAt = Date()
        for record in [expired, revoked] {
            let cache = APIKeyCache()
            let version = try fixture.store.changeCounter()
            _ = cache.lookup(digest, version: version)
            cache.store(record, for: digest, version: version)
            let authenticator = APIKeyAuthenticator(store: fixture.store, keyHeader: nil, usage: fixture.gateway.usage, cache: cache)
            let outcome = await authenticator.authenticate(request, route: MatchedRoute(route: route, captures: [:]))
            guard case .invalid = outcome else {
                Issue.record("expected invalid for \(record), got \(outcome)")
                continue
            }
        }
    }
}
