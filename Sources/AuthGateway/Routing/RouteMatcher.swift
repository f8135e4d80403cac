/// A route that matched a request, with its decoded path captures.
public struct MatchedRoute: Sendable {
    public let route: RoutePolicy
    public let captures: [String: String]
}

/// Finds the first route, in policy order, whose host, method and path template match a forwarded request.
///
/// Routes are indexed by their first path segment, so a request is compared only with the routes that start with
/// its first segment plus those that start with a capture or tail; first-match order is kept within that list.
public struct RouteMatcher: Sendable {
    public let routes: [RoutePolicy]
    /// For each literal first segment: the indices of the routes that can match a path starting with it, in order.
    private let candidatesByFirstSegment: [String: [Int]]
    /// The indices of routes whose first segment is not a literal (capture, tail, or the root template), in order.
    private let otherCandidates: [Int]

    public init(routes: [RoutePolicy]) {
        self.routes = routes
        var literal: [String: [Int]] = [:]
        var other: [Int] = []
        for (index, route) in routes.enumerated() {
            if case .literal(let first)? = route.path.segments.first {
                literal[first, default: []].append(index)
            } else {
                other.append(index)
            }
        }
        // Merge the non-literal routes into every literal list so each list alone keeps the policy order.
        self.candidatesByFirstSegment = literal.mapValues { ($0 + other).sorted() }
        self.otherCandidates = other
    }

    /// The outcome of matching.
    public enum Outcome: Sendable {
        case matched(MatchedRoute)
        case noRoute
        /// A route matched but a captured segment cannot be used as an identity.
        case unsafeCapture(route: RoutePolicy, capture: String)
    }

    public func match(_ request: ForwardedRequest) -> Outcome {
        let first = request.pathSegments.first.map(String.init) ?? ""
        for index in candidatesByFirstSegment[first] ?? otherCandidates {
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
