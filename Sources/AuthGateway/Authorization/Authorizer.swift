/// Checks an authenticated principal against a route's requirements.
public enum Authorizer {
    /// Why a principal was refused.
    public enum Refusal: Sendable, Equatable {
        /// The principal lacks scopes; the client may ask for them (RFC 6750 `insufficient_scope`).
        case insufficientScope(required: [String])
        /// Anything else: wrong subject, group, network, path binding or key restriction.
        case forbidden(reason: String)
    }

    /// nil when the principal may use the route.
    public static func refusal(for principal: Principal, on matched: MatchedRoute, from request: ForwardedRequest) -> Refusal? {
        let route = matched.route
        let requirements = route.requirements
        if let only = principal.restrictedToRoute, !same(only, route.name) {
            return .forbidden(reason: "API key \(principal.keyID) is restricted to route \(only)")
        }
        if !requirements.networks.isEmpty, !requirements.networks.containsAddress(request.clientAddress) {
            return .forbidden(reason: "source address \(request.clientAddress?.description ?? "unknown") is not in the route's networks")
        }
        // A path identity carries no scopes: on routes that allow it, the trusted source network is its authorization.
        if principal.method != .pathContext {
            let missing = requirements.scopes.filter { required in !principal.scopes.contains { same($0, required) } }
            if !missing.isEmpty { return .insufficientScope(required: requirements.scopes) }
        }
        if !requirements.subjects.isEmpty, !requirements.subjects.contains(where: { same($0, principal.subject) }) {
            return .forbidden(reason: "subject \(principal.subject) is not allowed on route \(route.name)")
        }
        if !requirements.groups.isEmpty, !requirements.groups.contains(where: { group in principal.groups.contains { same($0, group) } }) {
            return .forbidden(reason: "subject \(principal.subject) is in none of the route's groups")
        }
        for binding in requirements.bindings {
            guard let captured = matched.captures[binding.capture], same(captured, principal.value(of: binding.field)) else {
                return .forbidden(reason: "path {\(binding.capture)} does not equal the principal's \(binding.field.rawValue)")
            }
        }
        return nil
    }

    /// Exact UTF-8 equality. Swift's `==` is Unicode canonical equivalence ("é" == "e\u{301}"), but the backend
    /// gets and compares bytes, so an allow-list or binding must not accept another spelling of a name.
    static func same(_ lhs: String, _ rhs: String) -> Bool {
        lhs.utf8.count == rhs.utf8.count && lhs.utf8.elementsEqual(rhs.utf8)
    }
}
