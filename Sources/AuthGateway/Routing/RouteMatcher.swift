/// A route that matched a request, with its decoded path captures.
public struct MatchedRoute: Sendable {
    public let route: RoutePolicy
    public let captures: [String: String]
}

/// Finds the first route, in policy order, whose host, method and path template match a forwarded request.
///
/// The templates live in a segment tree (`RouteTrie`), so a request is compared only with the routes whose path
/// can match it, and the lowest policy index among them that also passes host and method wins.
public struct RouteMatcher: Sendable {
    public let routes: [RoutePolicy]
    private let trie: RouteTrie

    public init(routes: [RoutePolicy]) {
        self.routes = routes
        self.trie = RouteTrie(templates: routes.map(\.path))
    }

    /// The outcome of matching.
    public enum Outcome: Sendable {
        case matched(MatchedRoute)
        case noRoute
        /// A route matched but a captured segment cannot be used as an identity.
        case unsafeCapture(route: RoutePolicy, capture: String)
    }

    public func match(_ request: ForwardedRequest) -> Outcome {
        for index in trie.candidates(for: request.pathSegments) {
            let route = routes[index]
            if let host = route.host, host != request.host { continue }
            if let methods = route.methods, !methods.contains(request.method) { continue }
            guard let raw = route.path.match(request.pathSegments[...]) else { continue }
            var captures: [String: String] = [:]
            for (name, segment) in raw {
                guard let value = PercentDecoding.decodeCapture(segment) else { return .unsafeCapture(route: route, capture: name) }
                captures[name] = value
            }
            return .matched(MatchedRoute(route: route, captures: captures))
        }
        return .noRoute
    }
}
