import Foundation
import Yams

/// The `issuers:` section: trusted JWT issuers by name.
enum IssuerSection {
    /// Asymmetric JWS algorithms an issuer may be pinned to. `none` and HMAC are absent on purpose: a public JWKS
    /// key must never be usable as a shared secret.
    static let supportedAlgorithms = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
    static let maximumLeeway: TimeInterval = 300
    /// The range `jwks_fetch_timeout` may take: long enough for a real issuer, short enough not to hold decisions.
    static let jwksFetchTimeoutRange: ClosedRange<TimeInterval> = 0.1...60
    /// The range `max_token_lifetime` may take: a second up to a year (Kong caps `maximum_expiration` there too).
    static let tokenLifetimeRange: ClosedRange<TimeInterval> = 1...(365 * 86400)

    /// - Parameter publicURL: the gateway's public origin, which is the built-in authorization server's issuer.
    static func read(_ node: Node, reader: PolicyReader, publicURL: String?, environment: [String: String]) -> [(policy: IssuerPolicy, node: Node)] {
        guard let entries = reader.namedEntries(node, "issuers") else { return [] }
        return entries.compactMap { name, key, value in
            guard isValidName(name) else {
                reader.fail(key, "issuer name '\(name)' must be letters, digits, '-' or '_'")
                return nil
            }
            if let kind = value.mapping?["kind"]?.scalar?.string {
                guard kind == "builtin" else {
                    reader.fail(value.mapping?["kind"], "issuers.\(name).kind: '\(kind)' is not known (builtin, or leave it out for an external issuer)")
                    return nil
                }
                return BuiltinIssuerSection.read(name: name, node: value, reader: reader, publicURL: publicURL, environment: environment).map { ($0, key) }
            }
            return readIssuer(name: name, node: value, reader: reader).map { ($0, key) }
        }
    }

    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }
    }

    private static func readIssuer(name: String, node: Node, reader: PolicyReader) -> IssuerPolicy? {
        let what = "issuers.\(name)"
        let allowed: Set = [
            "issuer", "jwks_url", "discovery", "algorithms", "audience", "claims", "leeway",
            "jwks_min_refresh_interval", "jwks_cache_ttl", "jwks_stale_limit", "max_token_lifetime",
            "jwks_fetch_timeout",
        ]
        guard let entries = reader.mapping(node, what, allowed: allowed) else { return nil }
        guard let issuerNode = entries["issuer"], let issuer = reader.nonEmptyString(issuerNode, "\(what).issuer") else {
            if entries["issuer"] == nil { reader.fail(node, "\(what).issuer is required (the exact 'iss' of its tokens)") }
            return nil
        }
        var keySource: IssuerPolicy.KeySource?
        let discovery = entries["discovery"].flatMap { reader.bool($0, "\(what).discovery") } ?? false
        switch (entries["jwks_url"], discovery) {
        case (let urlNode?, false):
            keySource = reader.url(urlNode, "\(what).jwks_url").map { .jwksURL($0) }
        case (nil, true):
            keySource = .discovery
        case (_?, true):
            reader.fail(node, "\(what): give either jwks_url or discovery: true, not both")
        case (nil, false):
            reader.fail(node, "\(what): jwks_url is required (or discovery: true to read it from the issuer's metadata)")
        }
        var algorithms = ["RS256", "ES256"]
        if let algorithmNode = entries["algorithms"], let names = reader.strings(algorithmNode, "\(what).algorithms") {
            for name in names where !supportedAlgorithms.contains(name) {
                let why = name.lowercased() == "none" || name.uppercased().hasPrefix("HS")
                    ? "'\(name)' is refused: only asymmetric algorithms can be verified with an issuer's public keys"
                    : "'\(name)' is not supported"
                reader.fail(algorithmNode, "\(what).algorithms: \(why) (supported: \(supportedAlgorithms.joined(separator: ", ")))")
            }
            if names.isEmpty { reader.fail(algorithmNode, "\(what).algorithms must not be empty") }
            algorithms = names
        }
        var audience = IssuerPolicy.AudienceRule.routeResource
        if let audienceNode = entries["audience"] {
            if let scalar = audienceNode.scalar?.string, scalar == "route" {
                audience = .routeResource
            } else if let list = reader.strings(audienceNode, "\(what).audience (\"route\" or a list)") {
                audience = .fixed(list)
            }
        }
        var claims = ClaimMapping()
        if let claimsNode = entries["claims"],
            let mapping = reader.mapping(claimsNode, "\(what).claims", allowed: ["subject", "scopes", "groups", "client"])
        {
            if let v = mapping["subject"].flatMap({ reader.nonEmptyString($0, "\(what).claims.subject") }) { claims.subject = v }
            if let v = mapping["scopes"].flatMap({ reader.nonEmptyString($0, "\(what).claims.scopes") }) { claims.scopes = v }
            if let v = mapping["groups"].flatMap({ reader.nonEmptyString($0, "\(what).claims.groups") }) { claims.groups = v }
            if let v = mapping["client"].flatMap({ reader.nonEmptyString($0, "\(what).claims.client") }) { claims.client = v }
        }
        let leeway = entries["leeway"].flatMap { reader.duration($0, "\(what).leeway") } ?? 60
        if leeway > maximumLeeway { reader.fail(entries["leeway"], "\(what).leeway must be at most \(Int(maximumLeeway))s") }
        let refresh = entries["jwks_min_refresh_interval"].flatMap { reader.duration($0, "\(what).jwks_min_refresh_interval") } ?? 30
        let ttl = entries["jwks_cache_ttl"].flatMap { reader.duration($0, "\(what).jwks_cache_ttl") } ?? 300
        let stale = entries["jwks_stale_limit"].flatMap { reader.duration($0, "\(what).jwks_stale_limit") } ?? 3600
        let fetchTimeout = entries["jwks_fetch_timeout"].flatMap { reader.duration($0, "\(what).jwks_fetch_timeout") }
        if let fetchTimeout, !jwksFetchTimeoutRange.contains(fetchTimeout) {
            reader.fail(entries["jwks_fetch_timeout"], "\(what).jwks_fetch_timeout must be between 0.1s and 60s")
        }
        var maxLifetime = IssuerPolicy.defaultMaxTokenLifetime
        if let lifetimeNode = entries["max_token_lifetime"], let value = reader.duration(lifetimeNode, "\(what).max_token_lifetime") {
            if tokenLifetimeRange.contains(value) {
                maxLifetime = value
            } else {
                reader.fail(lifetimeNode, "\(what).max_token_lifetime must be between 1s and 365d")
            }
        }
        guard let keySource else { return nil }
        var policy = IssuerPolicy(
            name: name, issuer: issuer, keySource: keySource, algorithms: algorithms, audience: audience, claims: claims,
            leeway: leeway, jwksMinRefreshInterval: refresh, jwksCacheTTL: ttl, jwksStaleLimit: stale)
        policy.maxTokenLifetime = maxLifetime
        policy.jwksFetchTimeout = fetchTimeout ?? IssuerPolicy.defaultJWKSFetchTimeout
        return policy
    }
}
