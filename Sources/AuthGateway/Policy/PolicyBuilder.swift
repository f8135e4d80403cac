import Foundation
import Yams

/// Turns the sections of every policy file into one validated `Policy`.
struct PolicyBuilder {
    let sections: [FileSections]
    let environment: [String: String]

    struct Result {
        var policy: Policy?
        var errors: [PolicyError]
        var warnings: [String]
    }

    func build() -> Result {
        var warnings: [String] = []
        var extraErrors: [PolicyError] = []

        let gatewaySections = sections.filter { $0.gateway != nil }
        var gateway: GatewaySettings?
        if let first = gatewaySections.first, let node = first.gateway {
            gateway = GatewaySection.read(node, reader: first.reader)
            for duplicate in gatewaySections.dropFirst() {
                duplicate.reader.fail(duplicate.gateway, "'gateway' is already defined in \(first.reader.file)")
            }
        } else {
            extraErrors.append(PolicyError(file: sections.first?.reader.file ?? "policy", line: 1, message: "missing 'gateway' section (public_url, trusted_proxies)"))
        }

        var issuers: [IssuerPolicy] = []
        for section in sections {
            guard let node = section.issuers else { continue }
            for issuer in IssuerSection.read(node, reader: section.reader, publicURL: gateway?.publicURL, environment: environment) {
                if issuers.contains(where: { $0.name == issuer.policy.name }) {
                    section.reader.fail(issuer.node, "issuer '\(issuer.policy.name)' is defined twice")
                } else if issuer.policy.isBuiltin, let other = issuers.first(where: \.isBuiltin) {
                    section.reader.fail(issuer.node, "issuer '\(issuer.policy.name)': only one issuer can be of kind builtin ('\(other.name)' already is)")
                } else {
                    issuers.append(issuer.policy)
                }
            }
        }

        var routes: [RoutePolicy] = []
        if let gateway {
            for section in sections {
                guard let node = section.routes else { continue }
                let context = RouteSection.Context(gateway: gateway, issuers: issuers, environment: environment)
                for route in RouteSection.read(node, reader: section.reader, context: context) {
                    if routes.contains(where: { $0.name == route.policy.name }) {
                        section.reader.fail(route.node, "route name '\(route.policy.name)' is used twice")
                    } else {
                        routes.append(route.policy)
                        warnings += route.warnings
                    }
                }
            }
            if routes.isEmpty && sections.allSatisfy({ $0.routes == nil }) {
                warnings.append("the policy has no routes: every request will be denied")
            }
            if gateway.trustedProxies.isEmpty {
                warnings.append("gateway.trusted_proxies is empty: every forwardAuth request will be denied")
            }
        }

        let errors = sections.flatMap(\.reader.errors) + extraErrors
        guard errors.isEmpty, let gateway else { return Result(policy: nil, errors: errors, warnings: warnings) }
        return Result(policy: Policy(gateway: gateway, issuers: issuers, routes: routes), errors: [], warnings: warnings)
    }
}

/// The `gateway:` section.
enum GatewaySection {
    static func read(_ node: Node, reader: PolicyReader) -> GatewaySettings? {
        let allowed: Set = ["public_url", "realm", "trusted_proxies", "identity_headers", "api_key_header", "failed_credentials"]
        guard let entries = reader.mapping(node, "gateway", allowed: allowed) else { return nil }
        guard let publicURLNode = entries["public_url"] else {
            reader.fail(node, "gateway.public_url is required (the origin clients use, e.g. https://mcp.example.com)")
            return nil
        }
        let publicURL = reader.url(publicURLNode, "gateway.public_url")
        let realm = entries["realm"].flatMap { reader.nonEmptyString($0, "gateway.realm") } ?? "mcp"
        if realm.contains("\"") || realm.contains("\\") { reader.fail(entries["realm"], "gateway.realm must not contain quotes or backslashes") }
        var trusted: [IPNetwork]? = []
        if let proxies = entries["trusted_proxies"] {
            trusted = reader.networks(proxies, "gateway.trusted_proxies")
        } else {
            reader.fail(node, "gateway.trusted_proxies is required: list the addresses of your Traefik (e.g. [127.0.0.1/32])")
        }
        var headers = IdentityHeaderNames()
        if let headerNode = entries["identity_headers"] {
            let fields: [(String, WritableKeyPath<IdentityHeaderNames, String>)] = [
                ("subject", \.subject), ("method", \.method), ("scopes", \.scopes), ("client", \.client),
                ("issuer", \.issuer), ("key_id", \.keyID), ("route", \.route),
            ]
            if let names = reader.mapping(headerNode, "gateway.identity_headers", allowed: Set(fields.map(\.0))) {
                for (key, path) in fields {
                    guard let valueNode = names[key], let value = reader.nonEmptyString(valueNode, "gateway.identity_headers.\(key)") else { continue }
                    if PolicyReader.isSafeHeaderName(value) {
                        headers[keyPath: path] = value
                    } else {
                        reader.fail(valueNode, "gateway.identity_headers.\(key): '\(value)' must be letters, digits and '-' (no '_' or '.', which backends may confuse with '-')")
                    }
                }
            }
            if Set(headers.all.map { $0.lowercased() }).count != headers.all.count {
                reader.fail(headerNode, "gateway.identity_headers: two identity headers share one name")
            }
        }
        var apiKeyHeader: String? = "X-API-Key"
        if let keyNode = entries["api_key_header"] {
            if keyNode.scalar?.string.isEmpty == true || keyNode.scalar?.string == "null" || keyNode.scalar?.string == "~" {
                apiKeyHeader = nil
            } else if let value = reader.nonEmptyString(keyNode, "gateway.api_key_header") {
                if PolicyReader.isSafeHeaderName(value) { apiKeyHeader = value } else {
                    reader.fail(keyNode, "gateway.api_key_header: '\(value)' must be letters, digits and '-'")
                }
            }
        }
        var failedCredentials: RateLimit? = GatewaySettings.defaultFailedCredentials
        if let limitNode = entries["failed_credentials"], let text = reader.string(limitNode, "gateway.failed_credentials") {
            if text == "off" {
                failedCredentials = nil
            } else if let limit = RateLimit(text) {
                failedCredentials = limit
            } else {
                reader.fail(limitNode, "gateway.failed_credentials: '\(text)' is not N/s, N/min or N/h (or off)")
            }
        }
        guard let publicURL, let trusted else { return nil }
        return GatewaySettings(
            publicURL: publicURL, realm: realm, trustedProxies: trusted, identityHeaders: headers, apiKeyHeader: apiKeyHeader,
            failedCredentials: failedCredentials)
    }
}
