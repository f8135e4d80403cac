import Foundation
import Yams

/// Generates Traefik's dynamic configuration (file or HTTP provider) from a policy, so routers can never drift
/// from what the gateway decides.
///
/// Every route gets a router with the forwardAuth middleware first, `trustForwardHeader: false`, every identity
/// and credential header in `authResponseHeaders`, a bounded auth response, and a service pointing at the
/// route's `backend.url`; a `stripPrefix` middleware comes after forwardAuth, so the gateway sees the full path.
/// A `style: path` route's router goes to the gateway itself, without forwardAuth: the gateway is its proxy.
/// Routers keep the policy's first-match order through explicit priorities.
public struct TraefikConfiguration: Sendable {
    /// How Traefik reaches the gateway and where routers listen.
    public struct Options: Sendable {
        public var gatewayURL: String
        public var entryPoints: [String]
        public var middlewareName: String

        public init(gatewayURL: String = "http://127.0.0.1:8080", entryPoints: [String] = ["web"], middlewareName: String = "authgateway") {
            self.gatewayURL = gatewayURL.hasSuffix("/") ? String(gatewayURL.dropLast()) : gatewayURL
            self.entryPoints = entryPoints
            self.middlewareName = middlewareName
        }
    }

    /// A policy route that cannot become a router, with the reason.
    public struct Problem: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// The largest auth response Traefik accepts; denial bodies are a few hundred bytes.
    static let maxResponseBodySize = 16384
    static let routePriorityBase = 100_000
    static let gatewayPriority = 1_000_000

    public let policy: Policy
    public let options: Options

    public init(policy: Policy, options: Options) {
        self.policy = policy
        self.options = options
    }

    /// Every header Traefik must take from the auth response: identity headers, swapped credential headers, and the
    /// client's own credential headers (listed so that Traefik deletes the client's copy before the backend).
    public var authResponseHeaders: [String] {
        var names = policy.gateway.identityHeaders.all
        var extra = ["Authorization"]
        if let keyHeader = policy.gateway.apiKeyHeader { extra.append(keyHeader) }
        for route in policy.routes {
            if case .credential(let credential) = route.backend.style { extra.append(credential.header) }
        }
        for name in extra where !names.contains(where: { $0.lowercased() == name.lowercased() }) { names.append(name) }
        return names
    }

    /// The dynamic configuration as nested dictionaries (the YAML/JSON shape Traefik reads).
    public func dynamicConfiguration() throws -> [String: Any] {
        let auth = options.middlewareName
        var middlewares: [String: Any] = [
            auth: [
                "forwardAuth": [
                    "address": options.gatewayURL + "/auth",
                    "trustForwardHeader": false,
                    "authResponseHeaders": authResponseHeaders,
                    "maxResponseBodySize": Self.maxResponseBodySize,
                ] as [String: Any]
            ]
        ]
        var routers: [String: Any] = [:]
        var services: [String: Any] = [
            "authgateway": ["loadBalancer": ["servers": [["url": options.gatewayURL]], "passHostHeader": true]]
        ]
        // Discovery metadata and the authorization server's own endpoints must never sit behind auth, or MCP
        // clients fail with a 401 on the well-known URL.
        var gatewayPrefixes = [
            "/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration", "/oauth/",
        ]
        // An issuer with a path (https://host/tenant) serves its endpoints and OIDC discovery under that path too.
        if let builtin = policy.builtinIssuer, case let path = AuthorizationServerContext.path(of: builtin.issuer), !path.isEmpty {
            gatewayPrefixes += [path + "/oauth/", path + "/.well-known/openid-configuration"]
        }
        // Only on the public host: without Host() this router would take these paths from every site Traefik
        // serves (another application's own /oauth/ or discovery documents).
        let pathRule = gatewayPrefixes.map { "PathPrefix(`\($0)`)" }.joined(separator: " || ")
        let publicHost = URLComponents(string: policy.gateway.publicURL)?.host?.lowercased()
        routers["authgateway-well-known"] = [
            "rule": publicHost.map { "Host(`\($0)`) && (\(pathRule))" } ?? pathRule,
            "entryPoints": options.entryPoints, "service": "authgateway", "priority": Self.gatewayPriority,
        ] as [String: Any]

        var problems: [String] = []
        for (index, route) in policy.routes.enumerated() {
            if route.backend.pathStyle != nil {
                // The gateway is this route's reverse proxy and decides each request itself: no forwardAuth, and
                // the original Host and path reach it unchanged.
                routers[route.name] = [
                    "rule": TraefikRule.rule(for: route), "entryPoints": options.entryPoints, "service": "authgateway",
                    "priority": Self.routePriorityBase - index,
                ] as [String: Any]
                continue
            }
            guard let url = route.backend.url else {
                problems.append("route '\(route.name)' (\(route.location)) has no backend.url: Traefik needs the service address")
                continue
            }
            var chain = [auth]
            if let strip = route.backend.stripPrefix {
                let name = "\(route.name)-strip"
                middlewares[name] = ["stripPrefix": ["prefixes": [strip]]]
                chain.append(name)
            }
            routers[route.name] = [
                "rule": TraefikRule.rule(for: route), "entryPoints": options.entryPoints, "middlewares": chain,
                "service": route.name, "priority": Self.routePriorityBase - index,
            ] as [String: Any]
            services[route.name] = ["loadBalancer": ["servers": [["url": url]], "passHostHeader": true]]
        }
        guard problems.isEmpty else { throw Problem(description: problems.joined(separator: "\n")) }
        return ["http": ["routers": routers, "middlewares": middlewares, "services": services]]
    }

    public func yaml() throws -> String {
        try Yams.dump(object: try dynamicConfiguration(), sortKeys: true)
    }

    public func json() throws -> String {
        let data = try JSONSerialization.data(withJSONObject: try dynamicConfiguration(), options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// The entrypoint settings the generated routers rely on, as a static-configuration snippet.
    public static func staticSnippet(entryPoint: String = "web", address: String = ":80") -> String {
        """
        # Traefik static configuration the AuthGateway routers rely on (Traefik 3.7).
        entryPoints:
          \(entryPoint):
            address: "\(address)"
            http:
              # Refuse encoded '/' and '\\\\' before routing (400), so no router sees an ambiguous path.
              encodedCharacters:
                allowEncodedSlash: false
                allowEncodedBackSlash: false
                allowEncodedNullCharacter: false
              # Delete X_Auth_Subject / X.Auth.Subject, which backends may read as X-Auth-Subject.
              aliasHeadersStrategy: delete

        """
    }
}
