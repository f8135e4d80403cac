/// A route that matched a request, with its decoded path captures.
public struct MatchedRoute: Sendable {
    public let route: RoutePolicy
    public let captures: [String: String]
}

/// Finds the first route, in policy order, whose host, method and path template match a forwarded request.
public struct RouteMatcher: Sendable {
    public let routes: [RoutePolicy]

    public init(routes: [RoutePolicy]) {
        self.routes = routes
    }

    /// The outcome of matching.
    public enum Outcome: Sendable {
        case matched(MatchedRoute)
        case noRoute
        /// A route matched but a captured segment cannot be used as an identity.
        case unsafeCapture(route: RoutePolicy, capture: String)
    }

    public func match(_ request: ForwardedRequest) -> Outcome {
        for route in routes {
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
