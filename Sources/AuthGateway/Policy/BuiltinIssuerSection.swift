import Foundation
import Yams

/// An issuer of `kind: builtin`: the gateway's own authorization server, whose issuer URL is `gateway.public_url`.
enum BuiltinIssuerSection {
    static func read(name: String, node: Node, reader: PolicyReader, publicURL: String?, environment: [String: String]) -> IssuerPolicy? {
        let what = "issuers.\(name)"
        let allowed: Set = [
            "kind", "access_token_ttl", "refresh_token_ttl", "code_ttl", "consent_ttl", "registration", "registration_token_env",
            "client_id_metadata_documents", "allow_private_metadata_hosts", "rate_limits",
        ]
        guard let entries = reader.mapping(node, what, allowed: allowed) else { return nil }
        var settings = AuthorizationServerSettings()
        func duration(_ key: String, _ keyPath: WritableKeyPath<AuthorizationServerSettings, TimeInterval>, within range: ClosedRange<TimeInterval>) {
            guard let valueNode = entries[key], let value = reader.duration(valueNode, "\(what).\(key)") else { return }
            guard range.contains(value) else {
                reader.fail(valueNode, "\(what).\(key) must be between \(Int(range.lowerBound))s and \(Int(range.upperBound))s")
                return
            }
            settings[keyPath: keyPath] = value
        }
        // Never beyond the issuer's own max_token_lifetime, so every token it signs passes its own check.
        duration("access_token_ttl", \.accessTokenLifetime, within: 1...IssuerPolicy.defaultMaxTokenLifetime)
        duration("refresh_token_ttl", \.refreshTokenLifetime, within: 60...(366 * 86400))
        duration("code_ttl", \.codeLifetime, within: 1...600)
        duration("consent_ttl", \.consentLifetime, within: 10...3600)
        if let flag = entries["client_id_metadata_documents"].flatMap({ reader.bool($0, "\(what).client_id_metadata_documents") }) {
            settings.clientMetadataDocuments = flag
        }
        if let flag = entries["allow_private_metadata_hosts"].flatMap({ reader.bool($0, "\(what).allow_private_metadata_hosts") }) {
            settings.allowPrivateMetadataHosts = flag
        }
        if let limitsNode = entries["rate_limits"] {
            settings.rateLimits = readRateLimits(limitsNode, what: "\(what).rate_limits", reader: reader)
        }
        let tokenEnv = entries["registration_token_env"].flatMap { reader.nonEmptyString($0, "\(what).registration_token_env") }
        switch entries["registration"]?.scalar?.string {
        case nil, "open":
            if entries["registration_token_env"] != nil {
                reader.fail(entries["registration_token_env"], "\(what).registration_token_env needs registration: token")
            }
            settings.registration = .open
        case "off":
            settings.registration = .off
        case "token":
            if let tokenEnv {
                settings.registration = .token(environmentName: tokenEnv, value: environment[tokenEnv].flatMap { $0.isEmpty ? nil : $0 })
            } else {
                reader.fail(entries["registration"], "\(what).registration: token needs registration_token_env (the variable holding the initial access token)")
            }
        case let other?:
            reader.fail(entries["registration"], "\(what).registration: '\(other)' is not one of open, token, off")
        }
        guard let publicURL else { return nil }
        var issuer = IssuerPolicy(
            name: name, issuer: publicURL, keySource: .store, algorithms: ["ES256"], audience: .routeResource, claims: ClaimMapping(),
            // The gateway signs and checks its own tokens: only replicas' clock skew needs tolerating.
            leeway: 5, jwksMinRefreshInterval: 1, jwksCacheTTL: 60, jwksStaleLimit: 86400)
        issuer.authorizationServer = settings
        return issuer
    }

    /// `rate_limits: { registration: 10/min, sign_in: 10/min, metadata_fetch: 10/min }`; unnamed ones keep defaults.
    private static func readRateLimits(_ node: Node, what: String, reader: PolicyReader) -> RateLimits {
        var limits = RateLimits()
        let keys: [(String, WritableKeyPath<RateLimits, RateLimit>)] = [
            ("registration", \.registration), ("sign_in", \.signIn), ("metadata_fetch", \.metadataFetch),
        ]
        guard let entries = reader.mapping(node, what, allowed: Set(keys.map(\.0))) else { return limits }
        for (key, path) in keys {
            guard let valueNode = entries[key], let text = reader.string(valueNode, "\(what).\(key)") else { continue }
            guard let limit = RateLimit(text) else {
                reader.fail(valueNode, "\(what).\(key) must be a count per s, min or h, such as 10/min, not '\(text)'")
                continue
            }
            limits[keyPath: path] = limit
        }
        return limits
    }
}
