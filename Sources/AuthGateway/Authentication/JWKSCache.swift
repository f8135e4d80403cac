import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOCore
import Synchronization

/// The signing keys of one issuer, fetched from its JWKS and refreshed under the issuer's rules.
///
/// Keys are fetched lazily and again after `jwks_cache_ttl`; an unknown `kid` triggers at most one fetch per
/// `jwks_min_refresh_interval`; when the issuer is down the last good keys keep working for `jwks_stale_limit`.
actor JWKSCache {
    /// The result of asking for the key that verifies a token.
    enum Lookup {
        /// The verifier and the generation of the key set it came from.
        case verifier(JWTKeyCollection, generation: Int)
        case unknownKey
        case unavailable(String)
    }

    static let maximumDocumentSize = 1 << 20

    let issuer: IssuerPolicy
    private let client: HTTPClient
    private let logger: Logger
    private var keys: [JWK] = []
    private var lastSuccess: ContinuousClock.Instant?
    private var lastAttempt: ContinuousClock.Instant?
    private var lastAttemptFailed = false
    private var lastFailure = "never fetched"
    private var verifiers: [String: JWTKeyCollection] = [:]
    private var inflight: Task<Void, Never>?
    /// Unique across all caches and policy reloads, so a verification result can never be matched to another key set.
    private var generation = 0
    private static let generations = Atomic<Int>(0)
    /// How many JWKS fetches were attempted, for tests and metrics.
    private(set) var fetchCount = 0

    /// What a decision may use without a hop to this actor (which runs on Swift's global executor, away from the
    /// connection's event loop): the generation in force until the key set is due for refresh, and the verifiers
    /// built for it. Written only by the actor, whenever it changes either.
    private struct Published {
        var generation = 0
        var freshUntil: ContinuousClock.Instant?
        var verifiers: [String: JWTKeyCollection] = [:]
    }

    private nonisolated let published = Mutex(Published())

    /// Reads the key set of a `.store` issuer (the built-in authorization server) without any HTTP.
    private let localKeySet: (@Sendable () throws -> Data)?

    init(issuer: IssuerPolicy, client: HTTPClient, logger: Logger, localKeySet: (@Sendable () throws -> Data)? = nil) {
        self.issuer = issuer
        self.client = client
        self.logger = logger
        self.localKeySet = localKeySet
    }

    /// A verifier holding exactly the key named by `kid` (or the issuer's only key for `alg` when `kid` is absent),
    /// pinned to `alg`, which the caller has checked against the issuer's allow-list.
    func verifier(kid: String?, alg: String) async -> Lookup {
        let now = ContinuousClock.now
        guard let generation = await usableGeneration(now: now) else {
            return .unavailable("JWKS of issuer \(issuer.name) unavailable: \(lastFailure)")
        }
        if let verifier = await cachedVerifier(kid: kid, alg: alg) { return .verifier(verifier, generation: generation) }
        if kid != nil, lastAttempt.map({ now - $0 >= .seconds(issuer.jwksMinRefreshInterval) }) ?? true {
            await refresh()
            if let verifier = await cachedVerifier(kid: kid, alg: alg) { return .verifier(verifier, generation: self.generation) }
        }
        return .unknownKey
    }

    /// The generation of the key set in force when it is not due for refresh; nil means: ask `usableGeneration`.
    nonisolated func freshGeneration(now: ContinuousClock.Instant = .now) -> Int? {
        published.withLock { published in
            guard let until = published.freshUntil, now < until else { return nil }
            return published.generation
        }
    }

    /// `verifier(kid:alg:)`'s answer when the key set is not due for refresh and that verifier was built already;
    /// nil means: ask `verifier(kid:alg:)`.
    nonisolated func freshVerifier(kid: String?, alg: String, now: ContinuousClock.Instant = .now) -> Lookup? {
        published.withLock { published in
            guard let until = published.freshUntil, now < until, let verifier = published.verifiers[Self.verifierKey(kid: kid, alg: alg)]
            else { return nil }
            return .verifier(verifier, generation: published.generation)
        }
    }

    private static func verifierKey(kid: String?, alg: String) -> String { "\(kid ?? "")|\(alg)" }

    /// The generation of the key set in force, refreshing it when due; nil when no usable key set exists (never
    /// fetched, or the issuer has been unreachable for longer than the stale limit). A token verified under this
    /// generation stays verified for as long as the generation does not change.
    func usableGeneration(now: ContinuousClock.Instant = .now) async -> Int? {
        if isDue(now) { await refresh() }
        guard let lastSuccess, lastSuccess >= now || now - lastSuccess <= .seconds(issuer.jwksCacheTTL + issuer.jwksStaleLimit) else {
            return nil
        }
        return generation
    }

    private func isDue(_ now: ContinuousClock.Instant) -> Bool {
        if let lastSuccess, now - lastSuccess < .seconds(issuer.jwksCacheTTL) { return false }
        if lastAttemptFailed, let lastAttempt, now - lastAttempt < .seconds(issuer.jwksMinRefreshInterval) { return false }
        return true
    }

    private func cachedVerifier(kid: String?, alg: String) async -> JWTKeyCollection? {
        let cacheKey = Self.verifierKey(kid: kid, alg: alg)
        if let verifier = verifiers[cacheKey] { return verifier }
        let candidates = keys.filter { key in
            (kid == nil || key.keyIdentifier?.string == kid) && Self.key(key, fits: alg)
        }
        guard candidates.count == 1, var key = candidates.first else { return nil }
        // `collection.add` suspends, and a refetch may replace the key set meanwhile (actor reentrancy): the verifier
        // is kept only if the set it was built from is still the one in force, so a key the refetch removed is
        // never cached under the new set.
        let builtFor = generation
        // The collection holds this one key only, chosen above by kid and algorithm, so making it the default
        // cannot make jwt-kit fall back to another key. The algorithm is pinned so the header cannot choose it.
        key.algorithm = JWK.Algorithm(rawValue: alg)
        key.keyIdentifier = key.keyIdentifier ?? JWKIdentifier(string: "selected")
        let collection = JWTKeyCollection()
        do {
            _ = try await collection.add(jwk: key, isDefault: true)
        } catch {
            logger.warning("JWKS key cannot be used", metadata: ["issuer": "\(issuer.name)", "error": "\(error)"])
            return nil
        }
        guard generation == builtFor else { return nil }
        verifiers[cacheKey] = collection
        published.withLock { if $0.generation == builtFor { $0.verifiers[cacheKey] = collection } }
        return collection
    }

    /// What identifies a key for generation changes: a re-fetch of the same keys keeps verified tokens valid.
    private static func fingerprint(_ key: JWK) -> String {
        [key.keyIdentifier?.string, key.keyType.rawValue, key.algorithm?.rawValue, key.curve?.rawValue, key.modulus, key.exponent, key.x, key.y]
            .map { $0 ?? "-" }.joined(separator: "|")
    }

    /// Whether a JWK can verify `alg`: matching key type and curve, and its own `alg`, if any, equal to `alg`.
    static func key(_ key: JWK, fits alg: String) -> Bool {
        if let own = key.algorithm, own.rawValue != alg { return false }
        switch alg {
        case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512": return key.keyType == .rsa
        case "ES256": return key.keyType == .ecdsa && key.curve?.rawValue == "P-256"
        case "ES384": return key.keyType == .ecdsa && key.curve?.rawValue == "P-384"
        case "ES512": return key.keyType == .ecdsa && key.curve?.rawValue == "P-521"
        case "EdDSA": return key.keyType == .octetKeyPair && key.curve?.rawValue == "Ed25519"
        default: return false
        }
    }

    /// Fetches the JWKS once, sharing the fetch with every caller that arrives while it runs.
    private func refresh() async {
        if let inflight {
            await inflight.value
            return
        }
        let task = Task { await self.fetch() }
        inflight = task
        await task.value
        inflight = nil
    }

    private func fetch() async {
        fetchCount += 1
        lastAttempt = .now
        do {
            let document = try await keySetDocument()
            let fetched = try Self.parseKeySet(document)
            if fetched.map(Self.fingerprint) != keys.map(Self.fingerprint) || generation == 0 {
                generation = Self.generations.add(1, ordering: .relaxed).newValue
            }
            keys = fetched
            verifiers = [:]
            let now = ContinuousClock.now
            lastSuccess = now
            lastAttemptFailed = false
            let generation = generation
            let freshUntil = now + .seconds(issuer.jwksCacheTTL)
            published.withLock { $0 = Published(generation: generation, freshUntil: freshUntil) }
            logger.debug("fetched JWKS", metadata: ["issuer": "\(issuer.name)", "keys": "\(fetched.count)"])
        } catch {
            lastAttemptFailed = true
            lastFailure = "\(error)"
            logger.warning("JWKS fetch failed", metadata: ["issuer": "\(issuer.name)", "error": "\(error)"])
        }
    }

    private func keySetDocument() async throws -> Data {
        switch issuer.keySource {
        case .jwksURL(let url):
            return try await get(url)
        case .store:
            guard let localKeySet else { throw JWKSError.invalidDocument("no token store for the built-in issuer's keys") }
            return try localKeySet()
        case .discovery:
            let base = issuer.issuer.hasSuffix("/") ? String(issuer.issuer.dropLast()) : issuer.issuer
            let document = try await get(base + "/.well-known/openid-configuration")
            guard let metadata = try JSONSerialization.jsonObject(with: document) as? [String: Any],
                let jwksURI = metadata["jwks_uri"] as? String
            else { throw JWKSError.invalidDocument("discovery document has no jwks_uri") }
            guard metadata["issuer"] as? String == issuer.issuer else {
                throw JWKSError.invalidDocument("discovery document names another issuer")
            }
            return try await get(jwksURI)
        }
    }

    private func get(_ url: String) async throws -> Data {
        try await Self.get(url, client: client, timeout: .milliseconds(Int64(issuer.jwksFetchTimeout * 1000)))
    }

    /// One GET whose head and body together must arrive within `timeout`: AsyncHTTPClient's own deadline ends when
    /// the head arrives, so an issuer that sends a head and then stalls or trickles its body would otherwise hold the
    /// shared fetch (and every decision waiting on it) for ever.
    static func get(_ url: String, client: HTTPClient, timeout: Duration) async throws -> Data {
        try await withThrowingTaskGroup(of: Data.self) { group in
            group.addTask {
                var request = HTTPClientRequest(url: url)
                request.headers.add(name: "Accept", value: "application/json")
                let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
                let response = try await client.execute(request, timeout: .nanoseconds(nanoseconds))
                guard response.status == .ok else { throw JWKSError.httpStatus(url, Int(response.status.code)) }
                // Refused as soon as more than the limit arrives (or is announced): the rest is never read.
                let body = try await response.body.collect(upTo: maximumDocumentSize)
                return Data(buffer: body)
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw JWKSError.timedOut(url, timeout)
            }
            defer { group.cancelAll() }
            guard let document = try await group.next() else { throw JWKSError.timedOut(url, timeout) }
            return document
        }
    }

    /// Parses a JWKS, keeping the signature keys jwt-kit understands and skipping the others (encryption keys,
    /// unknown key types) instead of failing the whole set.
    static func parseKeySet(_ document: Data) throws -> [JWK] {
        guard let object = try JSONSerialization.jsonObject(with: document) as? [String: Any],
            let entries = object["keys"] as? [[String: Any]]
        else { throw JWKSError.invalidDocument("not a JWK set") }
        let decoder = JSONDecoder()
        let keys = entries.compactMap { entry -> JWK? in
            if let use = entry["use"] as? String, use != "sig" { return nil }
            guard let data = try? JSONSerialization.data(withJSONObject: entry) else { return nil }
            return try? decoder.decode(JWK.self, from: data)
        }
        guard !keys.isEmpty else { throw JWKSError.invalidDocument("no usable signing key") }
        return keys
    }
}

/// Why a JWKS could not be used.
enum JWKSError: Error, CustomStringConvertible {
    case httpStatus(String, Int)
    case invalidDocument(String)
    case timedOut(String, Duration)

    var description: String {
        switch self {
        case .httpStatus(let url, let status): "GET \(url) answered \(status)"
        case .invalidDocument(let why): why
        case .timedOut(let url, let timeout): "GET \(url) took longer than \(timeout)"
        }
    }
}
