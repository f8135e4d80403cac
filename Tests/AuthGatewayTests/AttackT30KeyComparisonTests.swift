@testable import AuthGateway
import Foundation
import Logging
import Testing
import TokenStore

/// T30 (Docker MCP gateway `subtle.ConstantTimeCompare`; Traefik `122175ac`): how long a key check takes must not
/// depend on how much of a guess is right. No test here measures time (that would be flaky and is not allowed);
/// they check the two properties the timing rests on, deterministically:
/// - a presented API key or client secret is never compared as text: it is hashed with SHA-256 first, and only
///   digests are looked up and compared, so which bytes of a guess are right says nothing about how far any
///   comparison runs;
/// - the final comparison, `constantTimeEquals`, reads every byte of both inputs wherever they differ, counted
///   through a byte collection that records each read (the harness is shown to catch an early exit).
@Suite("T30: key comparison")
struct AttackT30KeyComparisonTests {
    /// Counts the bytes read from the collections that share it.
    final class ReadCounter: @unchecked Sendable {
        var reads = 0
    }

    /// A byte array whose every element read goes through `counter`.
    struct CountingBytes: RandomAccessCollection {
        let bytes: [UInt8]
        let counter: ReadCounter
        var startIndex: Int { 0 }
        var endIndex: Int { bytes.count }
        subscript(position: Int) -> UInt8 {
            counter.reads += 1
            return bytes[position]
        }
    }

    static let length = 32

    /// Two 32-byte inputs that differ only at `position` (nil: identical), and how many bytes a comparison read.
    static func reads(differingAt position: Int?, _ compare: (CountingBytes, CountingBytes) -> Bool) -> (equal: Bool, reads: Int) {
        let counter = ReadCounter()
        let lhs = (0..<length).map { UInt8($0 * 7 & 0xFF) }
        var rhs = lhs
        if let position { rhs[position] ^= 0x01 }
        let equal = compare(CountingBytes(bytes: lhs, counter: counter), CountingBytes(bytes: rhs, counter: counter))
        return (equal, counter.reads)
    }

    @Test("T30: constantTimeEquals reads every byte of both inputs, whether they differ in the first, a middle or the last byte, or not at all", arguments: [nil, 0, 1, 16, 31] as [Int?])
    func comparisonReadsEveryByte(differingAt position: Int?) {
        let (equal, reads) = Self.reads(differingAt: position) { constantTimeEquals(bytes: $0, $1) }
        #expect(equal == (position == nil))
        #expect(reads == 2 * Self.length)
    }

    @Test("T30 control: the read counter catches an early exit (elementsEqual stops at a first-byte difference)")
    func counterCatchesEarlyExit() {
        let first = Self.reads(differingAt: 0) { $0.elementsEqual($1) }
        let last = Self.reads(differingAt: Self.length - 1) { $0.elementsEqual($1) }
        #expect(!first.equal && !last.equal)
        #expect(first.reads == 2)
        #expect(last.reads == 2 * Self.length)
    }

    @Test("T30: constantTimeEquals is true for identical bytes only", arguments: [
        ([], [], true), ([1, 2, 3], [1, 2, 3], true), ([1, 2, 3], [0, 2, 3], false), ([1, 2, 3], [1, 2, 4], false),
        ([1, 2, 3], [1, 2], false), ([1, 2], [1, 2, 3], false), ([], [0], false), ([0xFF], [0x7F], false),
    ] as [([UInt8], [UInt8], Bool)])
    func comparisonAnswers(_ testCase: ([UInt8], [UInt8], Bool)) {
        #expect(constantTimeEquals(Data(testCase.0), Data(testCase.1)) == testCase.2)
        #expect(constantTimeEquals(bytes: testCase.0, testCase.1) == testCase.2)
    }

    /// `key` with the character at `offset` of its secret part (after `agk_`) changed to another hex digit.
    static func nearMiss(_ key: String, secretOffset offset: Int) -> String {
        var characters = Array(key)
        let index = APIKeySecret.prefix.count + offset
        characters[index] = characters[index] == "0" ? "1" : "0"
        return String(characters)
    }

    @Test("T30: API keys differing from a real key in the first or the last secret character are both looked up by SHA-256 digest and refused the same way")
    func nearMissKeysGoThroughTheDigestLookup() async throws {
        let fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes))
        let real = try fixture.issueKey(scopes: ["ffmpeg"]).key
        let secretLength = 64  // 32 random bytes in hex
        let firstMiss = Self.nearMiss(real, secretOffset: 0)
        let lastMiss = Self.nearMiss(real, secretOffset: secretLength - 1)
        #expect(APIKeySecret.hasKeyShape(firstMiss) && APIKeySecret.hasKeyShape(lastMiss))

        let cache = APIKeyCache()
        let authenticator = APIKeyAuthenticator(
            store: fixture.store, keyHeader: nil, usage: LastUsedRecorder(store: fixture.store, logger: Logger(label: "t30")), cache: cache)
        let route = try #require(fixture.gateway.engine.policy.routes.first { $0.name == "ffmpeg" })
        func outcome(_ key: String) async throws -> AuthenticationOutcome {
            let request = try ForwardedRequest(
                headers: forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(key)")]), peer: IPAddress("127.0.0.1"),
                trustedProxies: fixture.gateway.engine.policy.gateway.trustedProxies)
            return await authenticator.authenticate(request, route: MatchedRoute(route: route, captures: [:]))
        }
        let firstOutcome = try await outcome(firstMiss)
        let lastOutcome = try await outcome(lastMiss)
        guard case .invalid(let firstReason) = firstOutcome, case .invalid(let lastReason) = lastOutcome else {
            Issue.record("a near-miss key was not refused: \(firstOutcome), \(lastOutcome)")
            return
        }
        #expect(firstReason == "unknown API key")
        #expect(lastReason == firstReason)
        // Both went through the digest lookup: each is now a known-unknown entry under its SHA-256 digest.
        let version = try fixture.store.changeCounter()
        for key in [firstMiss, lastMiss] {
            let cached = cache.lookup(APIKeySecret.digest(of: key), version: version)
            #expect(cached != nil && cached! == nil, "no negative entry under the digest of \(key == firstMiss ? "first" : "last")-character miss")
        }
        // The store answers digests only; the near misses' digests find nothing, the real key's finds the key.
        #expect(try await fixture.store.findKey(digest: APIKeySecret.digest(of: firstMiss)) == nil)
        #expect(try await fixture.store.findKey(digest: APIKeySecret.digest(of: lastMiss)) == nil)
        #expect(try await fixture.store.findKey(digest: APIKeySecret.digest(of: real)) != nil)
        if case .principal(let principal) = try await outcome(real) { #expect(principal.subject == "alice") } else { Issue.record("real key refused") }
    }

    @Test("T30: a client secret differing from the real one in its first or last secret character is refused; the store keeps only its digest")
    func nearMissClientSecretsAreRefused() throws {
        let fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes))
        let (client, secret) = try fixture.store.registerClient(ClientRegistration(
            name: "t30", redirectURIs: ["http://127.0.0.1/cb"], grantTypes: ["authorization_code"], authMethod: "client_secret_post", scope: nil))
        let plaintext = try #require(secret)
        #expect(client.secretDigest == OpaqueToken.digest(of: plaintext))
        let prefixLength = OpaqueTokenPrefix.clientSecret.count
        for offset in [prefixLength, plaintext.count - 1] {
            var characters = Array(plaintext)
            characters[offset] = characters[offset] == "0" ? "1" : "0"
            #expect(try fixture.store.authenticateClient(id: client.id, secret: String(characters)) == nil, "offset \(offset)")
        }
        #expect(try fixture.store.authenticateClient(id: client.id, secret: plaintext)?.id == client.id)
    }
}
