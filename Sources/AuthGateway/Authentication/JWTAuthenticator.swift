import AsyncHTTPClient
import Crypto
import Foundation
import JWTKit
import Logging
import TokenStore

/// The `jwt` credential kind: a bearer JWT from one of the route's trusted issuers, verified against its JWKS.
///
/// Algorithms are pinned per issuer (never `none` or HMAC), `exp` is required, `nbf`/`iat` are checked with the
/// issuer's bounded leeway, the stated lifetime is at most the issuer's `max_token_lifetime`, `iss` must match
/// exactly and `aud` must name the route's resource. Header parameters that point at other keys (`jku`, `x5u`,
/// `jwk`, `x5c`) are never read; JWEs, `crit` and nested (`cty`) tokens are refused.
public struct JWTAuthenticator: CredentialAuthenticator {
    public let kind = CredentialKind.jwt
    let caches: [String: JWKSCache]
    let verified: VerifiedTokenCache
    /// The store behind the built-in issuer: its signing keys and the grants its tokens belong to.
    let store: TokenStore?
    let grants: GrantStatusCache

    /// - Parameter reusing: the authenticator of the previous policy, whose key caches are kept for issuers whose
    ///   configuration did not change, so a policy reload does not refetch every JWKS.
    public init(issuers: [IssuerPolicy], client: HTTPClient, logger: Logger, store: TokenStore? = nil, reusing previous: JWTAuthenticator? = nil) {
        var caches: [String: JWKSCache] = [:]
        for issuer in issuers {
            if let kept = previous?.caches[issuer.name], kept.issuer == issuer {
                caches[issuer.name] = kept
            } else {
                var localKeySet: (@Sendable () throws -> Data)?
                if let store { localKeySet = { try SigningKeySetEndpoint.document(from: store) } }
                caches[issuer.name] = JWKSCache(issuer: issuer, client: client, logger: logger, localKeySet: localKeySet)
            }
        }
        self.caches = caches
        self.verified = previous?.verified ?? VerifiedTokenCache()
        self.store = store
        self.grants = previous?.grants ?? GrantStatusCache()
    }

    /// How many JWKS fetches the named issuer's cache has made.
    public func jwksFetchCount(issuer name: String) async -> Int {
        await caches[name]?.fetchCount ?? 0
    }

    public func authenticate(_ request: ForwardedRequest, route: MatchedRoute) async -> AuthenticationOutcome {
        guard case .token(let token) = BearerToken.read(from: request.headers) else { return .absent }
        // Three segments, counted as bytes: a cached token is never split (splitting, even by bytes, was the largest
        // cost of a cached JWT decision in perf).
        let dots = token.utf8Count(of: UInt8(ascii: "."))
        guard dots == 2 else {
            // Five segments is a JWE (RFC 7516 §7.1): never decrypted or unwrapped (pac4j GHSA-pm7g-w2cf-q238), refused.
            return dots == 4 ? .invalid(reason: "JWE compact serialization (five segments) is not accepted") : .absent
        }
        let digest = Data(token.utf8.withContiguousStorageIfAvailable { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
            ?? SHA256.hash(data: Data(token.utf8)))
        if let entry = verified.lookup(digest), route.route.issuers.contains(entry.issuer), let cache = caches[entry.issuer] {
            // Without a hop to the cache's actor while the key set is fresh: two thread switches per request otherwise.
            let usable: Int?
            if let fresh = cache.freshGeneration() { usable = fresh } else { usable = await cache.usableGeneration() }
            guard let generation = usable else {
                return .unavailable(reason: "JWKS of issuer \(entry.issuer) unavailable")
            }
            if generation == entry.generation {
                return await outcome(for: entry.claims, issuer: cache.issuer, route: route.route)
            }
        }
        // Split as bytes ("." is ASCII, so every piece is valid UTF-8), not by Character (grapheme breaking).
        let parts = token.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).map { Substring($0) }
        guard let header = Base64URL.decodeJSONObject(parts[0]), let alg = header["alg"] as? String else {
            return .invalid(reason: "malformed JWT header")
        }
        if header["crit"] != nil { return .invalid(reason: "JWT header has 'crit' parameters, none of which are understood") }
        if let typ = header["typ"] as? String, !["jwt", "at+jwt", "application/at+jwt"].contains(typ.lowercased()) {
            return .invalid(reason: "JWT typ '\(typ)' is not an access token")
        }
        // `cty` announces a nested token (RFC 7519 §5.2, `cty: JWT`) or other content: claims are read only from a
        // plain claims set, so any `cty` is refused before the payload is looked at.
        if header["cty"] != nil { return .invalid(reason: "JWT header has 'cty': nested or non-claims payloads are not accepted") }
        guard let unverified = Base64URL.decodeJSONObject(parts[1]) else {
            return .invalid(reason: "JWT payload is not a JSON claims object")
        }
        guard let iss = unverified["iss"] as? String else { return .invalid(reason: "JWT has no iss claim") }
        guard let cache = route.route.issuers.lazy.compactMap({ caches[$0] }).first(where: { $0.issuer.issuer == iss }) else {
            return .invalid(reason: "JWT issuer is not trusted on route \(route.route.name)")
        }
        let issuer = cache.issuer
        guard issuer.algorithms.contains(alg) else { return .invalid(reason: "JWT alg '\(alg)' is not allowed for issuer \(issuer.name)") }

        let verifier: JWTKeyCollection
        let generation: Int
        let kid = header["kid"] as? String
        let lookup: JWKSCache.Lookup
        if let fresh = cache.freshVerifier(kid: kid, alg: alg) { lookup = fresh } else { lookup = await cache.verifier(kid: kid, alg: alg) }
        switch lookup {
        case .verifier(let found, let foundGeneration):
            verifier = found
            generation = foundGeneration
        case .unknownKey: return .invalid(reason: "JWT kid is not in the JWKS of issuer \(issuer.name)")
        case .unavailable(let why): return .unavailable(reason: why)
        }
        let claims: TokenClaims
        do {
            claims = try await verifier.verify(String(token), as: TokenClaims.self)
        } catch {
            return .invalid(reason: "JWT signature does not verify")
        }
        if issuer.isBuiltin, !["at+jwt", "application/at+jwt"].contains((header["typ"] as? String)?.lowercased()) {
            return .invalid(reason: "built-in issuer tokens must be typ at+jwt")
        }
        verified.store(claims, issuer: issuer.name, generation: generation, for: digest)
        return await outcome(for: claims, issuer: issuer, route: route.route)
    }

    /// The principal for verified claims; for the built-in issuer also requires the token's grant (`sid`) to be
    /// active, so revocation, a disabled user, a revoked client, or the end of the API key the grant was signed in
    /// with stops a token before it expires; a key's route restriction applies to the grant's tokens too.
    private func outcome(for claims: TokenClaims, issuer: IssuerPolicy, route: RoutePolicy) async -> AuthenticationOutcome {
        let now = Date()
        let outcome = Self.principal(from: claims, issuer: issuer, route: route, now: now.timeIntervalSince1970)
        // The signature verified: a refusal from here on is no guess (see `invalidSigned`).
        if case .invalid(let reason) = outcome { return .invalidSigned(reason: reason) }
        guard issuer.isBuiltin, case .principal(var principal) = outcome else { return outcome }
        guard let store, let grantID = claims["sid"]?.stringValue else { return .invalid(reason: "built-in token has no grant") }
        let status: GrantStatus
        do {
            status = try await grants.value(for: grantID, store: store) { try await store.grantStatus(id: grantID, now: now) }
        } catch {
            return .unavailable(reason: "token store lookup failed: \(error)")
        }
        // The status may be cached from before a key's expiry: its end is compared with the clock on every request.
        guard status.isActive(at: now), case .active(_, let onlyRoute) = status else { return .invalidSigned(reason: "grant \(grantID) is not active") }
        if let onlyRoute { principal.restrictedToRoute = onlyRoute }
        return .principal(principal)
    }

    /// Applies the issuer's time, issuer, audience and claim-mapping rules to verified claims.
    static func principal(from claims: TokenClaims, issuer: IssuerPolicy, route: RoutePolicy, now: TimeInterval) -> AuthenticationOutcome {
        guard let exp = claims["exp"]?.numberValue else { return .invalid(reason: "JWT has no numeric exp") }
        guard now < exp + issuer.leeway else { return .invalid(reason: "JWT expired") }
        if let nbf = claims["nbf"] {
            guard let value = nbf.numberValue, value <= now + issuer.leeway else { return .invalid(reason: "JWT not valid yet (nbf)") }
        }
        if let iat = claims["iat"] {
            guard let value = iat.numberValue, value <= now + issuer.leeway else { return .invalid(reason: "JWT issued in the future (iat)") }
        }
        // The lifetime the token states; without `iat`, what is left of it (the leeway covers the issuer's clock
        // being ahead of ours). A token made for years is refused even though its signature is good.
        if let iat = claims["iat"]?.numberValue {
            guard exp - iat <= issuer.maxTokenLifetime else { return .invalid(reason: "JWT lifetime (exp - iat) exceeds max_token_lifetime") }
        } else {
            guard exp - now <= issuer.maxTokenLifetime + issuer.leeway else {
                return .invalid(reason: "JWT without iat expires beyond max_token_lifetime")
            }
        }
        guard claims["iss"]?.stringValue == issuer.issuer else { return .invalid(reason: "JWT iss does not match") }
        let audiences: [String]
        switch claims["aud"] {
        case .string(let value)?: audiences = [value]
        case .array(let values)?: audiences = values.compactMap(\.stringValue)
        default: return .invalid(reason: "JWT has no aud")
        }
        let expected: [String]
        switch issuer.audience {
        case .routeResource: expected = [route.resource]
        case .fixed(let values): expected = values
        }
        guard audiences.contains(where: expected.contains) else { return .invalid(reason: "JWT aud does not name this resource") }
        guard let subject = claims[issuer.claims.subject]?.stringValue, !subject.isEmpty else {
            return .invalid(reason: "JWT has no \(issuer.claims.subject) claim")
        }
        let scopes = claims[issuer.claims.scopes]?.stringList ?? claims["scp"]?.stringList ?? []
        let groups = claims[issuer.claims.groups]?.stringList ?? []
        let client = claims[issuer.claims.client]?.stringValue ?? claims["azp"]?.stringValue ?? ""
        return .principal(
            Principal(
                subject: subject, method: .jwt, scopes: scopes, groups: groups, client: client, issuer: issuer.issuer,
                keyID: "", restrictedToRoute: nil))
    }
}

/// Base64url without padding (RFC 7515 §2), for reading JWT segments before verification.
enum Base64URL {
    static func encode(_ bytes: some DataProtocol) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ text: some StringProtocol) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        guard !base64.contains("=") else { return nil }
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }

    static func decodeJSONObject(_ text: some StringProtocol) -> [String: Any]? {
        decode(text).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
    }
}
