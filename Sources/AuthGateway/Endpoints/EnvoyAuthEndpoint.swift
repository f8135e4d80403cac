import HTTPTypes
import Hummingbird

/// The decision endpoint for Envoy's `ext_authz` HTTP service (`/envoy/auth/<original path>`).
///
/// Envoy does not send `X-Forwarded-Method/-Uri/-Host`: it sends the original method, the original path after its
/// `path_prefix`, and the original authority as `Host`. This endpoint restates them as the forwarded headers the
/// decision engine reads (replacing any the client sent) and decides exactly as `/auth` does, including the
/// trusted-proxy check on the Envoy peer. The client address must come from Envoy's `x-forwarded-for`
/// (`use_remote_address: true` and the header in `allowed_headers`); without it the request is refused rather than
/// taking Envoy's own address for the client's.
enum EnvoyAuthEndpoint {
    static let prefix = "/envoy/auth"

    static func register(on router: Router<GatewayRequestContext>, endpoint: AuthEndpoint) {
        for method in AuthEndpoint.methods {
            for path in [prefix, prefix + "/**"] {
                router.on(RouterPath(path), method: method) { request, context in
                    await endpoint.respond(request, forwarded: forwardedHeaders(of: request), context: context)
                }
            }
        }
    }

    static func forwardedHeaders(of request: Request) -> HTTPFields {
        forwardedHeaders(method: request.method, target: request.uri.string, authority: request.head.authority, headers: request.headers)
    }

    /// The forwarded headers for a request to `target` (path and query as received, `/envoy/auth` included).
    static func forwardedHeaders(method: HTTPRequest.Method, target: String, authority: String?, headers: HTTPFields) -> HTTPFields {
        var headers = headers
        let path = target.hasPrefix(prefix) ? String(target.dropFirst(prefix.count)) : target
        headers[.xForwardedMethod] = method.rawValue
        headers[.xForwardedUri] = path.isEmpty || path.hasPrefix("?") ? "/" + path : path
        headers[.xForwardedHost] = authority
        if headers[values: .xForwardedProto].isEmpty { headers[.xForwardedProto] = "http" }
        return headers
    }
}

extension HTTPField.Name {
    static let xForwardedMethod = HTTPField.Name("X-Forwarded-Method")!
    static let xForwardedUri = HTTPField.Name("X-Forwarded-Uri")!
    static let xForwardedHost = HTTPField.Name("X-Forwarded-Host")!
    static let xForwardedProto = HTTPField.Name("X-Forwarded-Proto")!
    static let xForwardedFor = HTTPField.Name("X-Forwarded-For")!
}
