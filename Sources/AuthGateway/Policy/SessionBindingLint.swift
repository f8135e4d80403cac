import Foundation

/// Finds forwardAuth routes that deliver message POSTs to a session-based backend without session binding.
///
/// Session binding lives in the gateway's reverse proxy (`backend.style: path`): only there does the gateway see
/// the SSE stream that announces a session and can tie the session to its principal. A forwardAuth route to the
/// same backend sees only the POST, so any principal it admits who learns a session id can post into that session.
///
/// The rule, precisely: a route is reported when (1) its backend style is not `path`, (2) it admits POST (no
/// `methods`, or `methods` lists POST), (3) its `backend.url` has the same origin (scheme, host and port, case
/// and default port ignored) as the `url` of a `style: path` route, and (4) its path can reach a message
/// endpoint: a literal segment `messages` (any case; OpenMemory's `/mcp/messages/`, the MCP SDK's `/messages/`)
/// or a trailing `/**`. A route without `backend.url` cannot be compared and is not reported.
public enum SessionBindingLint {
    /// One warning per reported route, each starting with the route's `file:line:`.
    public static func warnings(for policy: Policy) -> [String] {
        let proxied = policy.routes.compactMap { route in route.backend.pathStyle.flatMap { origin(of: $0.origin) }.map { ($0, route.name) } }
        guard !proxied.isEmpty else { return [] }
        var warnings: [String] = []
        for route in policy.routes where route.backend.pathStyle == nil {
            guard route.methods?.contains("POST") ?? true, let url = route.backend.url, let origin = origin(of: url),
                let proxy = proxied.first(where: { $0.0 == origin })?.1, reachesMessages(route.path)
            else { continue }
            warnings.append(
                "\(route.location): route '\(route.name)' forwards POSTs to the backend of path-style route '\(proxy)' without session binding: forwardAuth never sees the SSE stream, so any principal this route admits who learns a session id can post into that session; serve the backend through '\(proxy)' only, or limit this route to methods: [GET]")
        }
        return warnings
    }

    private static func reachesMessages(_ path: PathTemplate) -> Bool {
        path.segments.contains { segment in
            switch segment {
            case .literal(let value): value.lowercased() == "messages"
            case .tail: true
            case .capture: false
            }
        }
    }

    /// `scheme://host:port`, lower case, with the scheme's default port made explicit.
    private static func origin(of url: String) -> String? {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(), let host = components.host?.lowercased(),
            !host.isEmpty
        else { return nil }
        let port = components.port ?? (scheme == "https" ? 443 : 80)
        return "\(scheme)://\(host):\(port)"
    }
}
