import Foundation

/// RFC 9728 protected resource metadata for a route: what the resource is, which authorization servers issue
/// tokens for it and which scopes it uses. MCP clients read it after a 401 to start OAuth discovery.
public struct ProtectedResourceMetadata: Sendable, Equatable {
    public let resource: String
    public let authorizationServers: [String]
    public let scopesSupported: [String]
    public let resourceName: String

    /// The metadata for the resource whose path is the longest segment-wise prefix of `requestedPath` (the path
    /// after `/.well-known/oauth-protected-resource`), or nil when no route's resource covers it. The root document
    /// exists only when a route's resource is the public origin itself: describing the origin otherwise would make
    /// clients ask for tokens whose audience no route accepts.
    public static func lookup(path requestedPath: String, in policy: Policy) -> ProtectedResourceMetadata? {
        let origin = policy.gateway.origin
        let requested = requestedPath.split(separator: "/").map(String.init)
        var best: (route: RoutePolicy, length: Int)?
        for route in policy.routes {
            guard route.resource == origin || route.resource.hasPrefix(origin + "/") else { continue }
            let resourcePath = route.resource.dropFirst(origin.count).split(separator: "/").map(String.init)
            guard resourcePath.count <= requested.count, Array(requested.prefix(resourcePath.count)) == resourcePath else { continue }
            if requested.isEmpty && !resourcePath.isEmpty { continue }
            if best == nil || resourcePath.count > best!.length { best = (route, resourcePath.count) }
        }
        guard let best else { return nil }
        let sharing = policy.routes.filter { $0.resource == best.route.resource }
        var servers: [String] = []
        var scopes: [String] = []
        for route in sharing {
            if route.accept.contains(.jwt) {
                for name in route.issuers {
                    if let issuer = policy.issuer(named: name)?.issuer, !servers.contains(issuer) { servers.append(issuer) }
                }
            }
            for scope in route.requirements.scopes where !scopes.contains(scope) { scopes.append(scope) }
        }
        // The built-in server comes first: clients start with authorization_servers[0], and it is the one that works
        // without any identity provider.
        if let builtin = policy.builtinIssuer?.issuer, let index = servers.firstIndex(of: builtin), index > 0 {
            servers.insert(servers.remove(at: index), at: 0)
        }
        return ProtectedResourceMetadata(
            resource: best.route.resource, authorizationServers: servers, scopesSupported: scopes, resourceName: best.route.name)
    }

    /// The JSON document (keys sorted, slashes unescaped).
    public var json: String {
        var object: [String: Any] = [
            "resource": resource,
            "scopes_supported": scopesSupported,
            "bearer_methods_supported": ["header"],
            "resource_name": resourceName,
        ]
        if !authorizationServers.isEmpty { object["authorization_servers"] = authorizationServers }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
