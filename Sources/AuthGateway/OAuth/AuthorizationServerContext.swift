import Foundation

/// The built-in authorization server as the current policy defines it: its issuer URL, endpoints, settings, and
/// the resources (with their scopes) it may issue tokens for.
struct AuthorizationServerContext: Sendable {
    let policy: Policy
    let issuer: IssuerPolicy
    let settings: AuthorizationServerSettings
    /// Resource URL → scopes its routes use, for every route that accepts the built-in issuer's tokens.
    let resources: [String: [String]]

    /// nil when the policy has no issuer of `kind: builtin`.
    init?(policy: Policy) {
        guard let issuer = policy.builtinIssuer, let settings = issuer.authorizationServer else { return nil }
        self.policy = policy
        self.issuer = issuer
        self.settings = settings
        var resources: [String: [String]] = [:]
        for route in policy.routes where route.accept.contains(.jwt) && route.issuers.contains(issuer.name) {
            var scopes = resources[route.resource] ?? []
            for scope in route.requirements.scopes where !scopes.contains(scope) { scopes.append(scope) }
            resources[route.resource] = scopes
        }
        self.resources = resources
    }

    /// The issuer identifier: exactly `gateway.public_url`.
    var issuerURL: String { issuer.issuer }

    /// The path part of the issuer URL (`""` or `/tenant`), under which the endpoints live.
    var issuerPath: String { Self.path(of: issuerURL) }

    func endpoint(_ name: String) -> String { issuerURL + "/oauth/" + name }

    /// Every scope a client can ask for, in a stable order.
    var scopesSupported: [String] {
        var all: [String] = []
        for scopes in resources.keys.sorted().compactMap({ resources[$0] }) {
            for scope in scopes where !all.contains(scope) { all.append(scope) }
        }
        return all
    }

    var registrationEnabled: Bool { settings.registration != .off }

    static func path(of url: String) -> String {
        let path = URLComponents(string: url)?.path ?? ""
        return path.hasSuffix("/") ? String(path.dropLast()) : path
    }
}
