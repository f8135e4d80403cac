import Foundation

/// Which redirect URIs a client may register, and when a requested one matches a registered one.
///
/// HTTPS anywhere, plain HTTP only on a loopback host (RFC 8252 §7.3), and private-use schemes of native apps
/// (`cursor://…`); never a fragment, never a scheme that runs or reads something locally.
enum RedirectURIRules {
    static let refusedSchemes: Set = ["javascript", "data", "file", "vbscript", "about", "blob", "ftp", "ws", "wss", "chrome", "view-source"]
    static let loopbackHosts: Set = ["127.0.0.1", "[::1]", "::1", "localhost"]

    /// Why `uri` cannot be registered, or nil.
    static func problem(_ uri: String) -> String? {
        guard uri.count <= 2000, let components = URLComponents(string: uri), let scheme = components.scheme?.lowercased() else {
            return "'\(uri.prefix(200))' is not an absolute URI"
        }
        guard components.fragment == nil else { return "'\(uri)' must not contain a fragment" }
        guard !refusedSchemes.contains(scheme) else { return "'\(uri)' uses the \(scheme): scheme, which is not allowed" }
        switch scheme {
        case "https":
            guard let host = components.host, !host.isEmpty else { return "'\(uri)' has no host" }
        case "http":
            guard let host = components.host?.lowercased(), loopbackHosts.contains(host) else {
                return "'\(uri)': plain http is allowed only on a loopback host (127.0.0.1, [::1], localhost)"
            }
        default:
            guard components.user == nil, components.password == nil else { return "'\(uri)' must not contain credentials" }
        }
        return nil
    }

    /// Whether `requested` is one of `registered`: exact string equality, except that a loopback HTTP redirect may
    /// use any port (native apps bind an ephemeral port, RFC 8252 §7.3).
    static func matches(_ requested: String, registered: [String]) -> Bool {
        if registered.contains(requested) { return true }
        guard let asked = loopbackWithoutPort(requested) else { return false }
        return registered.contains { loopbackWithoutPort($0) == asked }
    }

    private static func loopbackWithoutPort(_ uri: String) -> String? {
        guard var components = URLComponents(string: uri), components.scheme == "http",
            let host = components.host?.lowercased(), loopbackHosts.contains(host), components.fragment == nil
        else { return nil }
        components.port = nil
        return components.string
    }
}
