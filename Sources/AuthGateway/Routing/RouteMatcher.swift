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
    /// Every template literal by segment position, for `ambiguousSegment(in:)`.
    private let literalsByDepth: [Set<ExactSegment>]

    public init(routes: [RoutePolicy]) {
        self.routes = routes
        self.trie = RouteTrie(templates: routes.map(\.path))
        var literals: [Set<ExactSegment>] = []
        for route in routes {
            for (depth, segment) in route.path.segments.enumerated() {
                guard case .literal(let value) = segment else { continue }
                if literals.count <= depth { literals.append(contentsOf: repeatElement([], count: depth + 1 - literals.count)) }
                literals[depth].insert(ExactSegment(value))
            }
        }
        self.literalsByDepth = literals
    }

    /// The outcome of matching.
    public enum Outcome: Sendable {
        case matched(MatchedRoute)
        case noRoute
        /// A route matched but a captured segment cannot be used as an identity.
        case unsafeCapture(route: RoutePolicy, capture: String)
        /// A path segment that a backend may read as a route literal the segment itself does not match here or in
        /// Traefik (an escape that stays encoded, or a `;` parameter): refused rather than routed elsewhere.
        case ambiguousSegment(String)
    }

    public func match(_ request: ForwardedRequest) -> Outcome {
        if let segment = ambiguousSegment(in: request) { return .ambiguousSegment(String(segment)) }
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

    /// The first segment whose escapes or `;` parameters make it ambiguous.
    ///
    /// The path is normalised, so what stays encoded is a reserved or non-ASCII character: Traefik routes on such
    /// an escape still encoded (reserved) or decoded (others), and many backends decode every escape and some drop
    /// `;` parameters (`admin;x=1` read as `admin`). A segment that could so become a literal of a route at its
    /// position, while not being that literal itself, cannot be routed the same way by everyone: it is refused.
    /// Paths without `%` or `;` (nearly all) are not looked at further.
    private func ambiguousSegment(in request: ForwardedRequest) -> Substring? {
        guard Self.hasEscapeOrParameter(request.path[...]) else { return nil }
        for (depth, segment) in request.pathSegments.prefix(literalsByDepth.count).enumerated() where Self.hasEscapeOrParameter(segment) {
            let literals = literalsByDepth[depth]
            let decoded = PercentDecoding.decodedText(segment)
            if literals.contains(ExactSegment(decoded)) { return segment }
            if let semicolon = segment.utf8.firstIndex(of: UInt8(ascii: ";")),
                literals.contains(ExactSegment(PercentDecoding.decodedText(segment[..<semicolon])))
            {
                return segment
            }
        }
        return nil
    }

    private static func hasEscapeOrParameter(_ text: Substring) -> Bool {
        text.utf8Contains(UInt8(ascii: "%")) || text.utf8Contains(UInt8(ascii: ";"))
    }
}
