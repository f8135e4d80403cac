import AsyncHTTPClient
@testable import AuthGateway
import Crypto
import Foundation
import Hummingbird
import JWTKit
import Synchronization
import Testing

/// JWKS faults that must never open the gate or wedge the key cache: a body that stalls after a prompt head, the
/// fetch timeout as policy, and a refetch that replaces the key set while a verifier is being built.
@Suite("JWKS fetch faults")
struct JWKSFetchFaultTests {
    @Test("a JWKS whose head comes at once and whose body stalls fails the fetch at jwks_fetch_timeout", .timeLimit(.minutes(1)))
    func stalledBodyTimesOut() async throws {
        let router = Router()
        router.get("/jwks.json") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "application/json", .contentLength: "100000"],
                body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: "{\"keys\": ["))
                    // AsyncHTTPClient's deadline ended with the head; only the gateway's own deadline ends this.
                    try await Task.sleep(for: .seconds(600))
                    try await writer.finish(nil)
                })
        }
        let server = try await LoopbackServer(router: router)
        defer { Task { await server.stop() } }
        await #expect(throws: JWKSError.self) {
            _ = try await JWKSCache.get("\(server.baseURL)/jwks.json", client: .shared, timeout: .milliseconds(300))
        }
    }

    @Test("a JWKS answering more than the document limit is refused without reading it all", .timeLimit(.minutes(1)))
    func oversizedBodyIsRefused() async throws {
        let router = Router()
        router.get("/jwks.json") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: ResponseBody { writer in
                    let chunk = ByteBuffer(repeating: UInt8(ascii: " "), count: 1 << 20)
                    for _ in 0..<100 { try await writer.write(chunk) }
                    try await writer.finish(nil)
                })
        }
        let server = try await LoopbackServer(router: router)
        defer { Task { await server.stop() } }
        await #expect(throws: (any Error).self) {
            _ = try await JWKSCache.get("\(server.baseURL)/jwks.json", client: .shared, timeout: .seconds(20))
        }
    }

    @Test("jwks_fetch_timeout is read from the policy, defaults to 5s and must be between 0.1s and 60s")
    func fetchTimeoutPolicy() throws {
        func issuers(_ timeout: String?) -> String {
            """
            issuers:
              corp:
                issuer: https://sso.example.com
                jwks_url: https://sso.example.com/jwks.json
            \(timeout.map { "    jwks_fetch_timeout: \($0)" } ?? "")

            """
        }
        let routes = "  - name: ffmpeg\n    match: { path: \"/ffmpeg/**\" }\n    accept: [jwt]\n"
        let defaulted = try PolicyLoader.load(yaml: testPolicy(issuers: issuers(nil), routes: routes)).policy
        #expect(defaulted.issuers.first?.jwksFetchTimeout == 5)
        let set = try PolicyLoader.load(yaml: testPolicy(issuers: issuers("0.5s"), routes: routes)).policy
        #expect(set.issuers.first?.jwksFetchTimeout == 0.5)
        for bad in ["0s", "0.05s", "61s", "2m"] {
            #expect(throws: PolicyLoadError.self, "\(bad)") { try PolicyLoader.load(yaml: testPolicy(issuers: issuers(bad), routes: routes)) }
        }
    }

    @Test("a verifier built while a refetch replaces the key set is never kept for the new set", .timeLimit(.minutes(1)))
    func verifierRacingARefetchIsNotCached() async throws {
        let old = P256.Signing.PrivateKey(), new = P256.Signing.PrivateKey()
        let document = Document(Self.jwks([("old", old)]))
        var issuer = IssuerPolicy(
            name: "corp", issuer: "https://sso.example.com", keySource: .store, algorithms: ["ES256"], audience: .routeResource,
            claims: ClaimMapping(), leeway: 5, jwksMinRefreshInterval: 0, jwksCacheTTL: 300, jwksStaleLimit: 3600)
        issuer.jwksFetchTimeout = 1
        var stale = 0
        for _ in 0..<300 {
            document.set(Self.jwks([("old", old)]))
            let cache = JWKSCache(
                issuer: issuer, client: .shared, logger: LoopbackServer.quietLogger, localKeySet: { document.get() })
            _ = await cache.usableGeneration()
            // One task builds the verifier for "old" (it suspends inside jwt-kit) while another makes the cache
            // refetch a set without "old" (an unknown kid triggers a refetch).
            await withTaskGroup(of: Void.self) { group in
                group.addTask { _ = await cache.verifier(kid: "old", alg: "ES256") }
                group.addTask {
                    document.set(Self.jwks([("new", new)]))
                    _ = await cache.verifier(kid: "new", alg: "ES256")
                }
            }
            if case .verifier = await cache.verifier(kid: "old", alg: "ES256") { stale += 1 }
            if cache.freshVerifier(kid: "old", alg: "ES256") != nil { stale += 1 }
        }
        #expect(stale == 0, "a removed key stayed usable after the refetch in \(stale) of 300 rounds")
    }

    /// The key set document the cache reads, changed by the test while the cache runs.
    final class Document: Sendable {
        private let data: Mutex<Data>
        init(_ data: Data) { self.data = Mutex(data) }
        func get() -> Data { data.withLock { $0 } }
        func set(_ new: Data) { data.withLock { $0 = new } }
    }

    static func jwks(_ keys: [(kid: String, key: P256.Signing.PrivateKey)]) -> Data {
        let entries = keys.map { kid, key -> [String: String] in
            let raw = key.publicKey.rawRepresentation
            return [
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": Base64URL.encode(raw.prefix(32)), "y": Base64URL.encode(raw.suffix(32)),
            ]
        }
        return try! JSONSerialization.data(withJSONObject: ["keys": entries])
    }
}
