import HTTPTypes
import Hummingbird

/// Serves discovery metadata: never behind authentication, never a 401, readable by browser-based clients (CORS),
/// cacheable for a short while.
enum MetadataEndpoint {
    static let prefix = "/.well-known/oauth-protected-resource"

    static func register(on router: Router<GatewayRequestContext>, gateway: Gateway) {
        for path in [prefix, prefix + "/**"] {
            router.get(RouterPath(path)) { request, _ in protectedResource(request, gateway: gateway) }
            router.on(RouterPath(path), method: .options) { _, _ in preflight() }
        }
    }

    static func protectedResource(_ request: Request, gateway: Gateway) -> Response {
        let path = String(request.uri.path.dropFirst(prefix.count))
        guard let metadata = ProtectedResourceMetadata.lookup(path: path, in: gateway.engine.policy) else {
            return json(#"{"error":"not_found","error_description":"No protected resource at this path."}"#, status: .notFound)
        }
        return json(metadata.json, status: .ok)
    }

    static func json(_ body: String, status: HTTPResponse.Status) -> Response {
        var headers = corsHeaders
        headers[.contentType] = "application/json"
        headers[.cacheControl] = status == .ok ? "public, max-age=300" : "no-store"
        return Response(status: status, headers: headers, body: .init(byteBuffer: .init(string: body)))
    }

    static func preflight() -> Response {
        var headers = corsHeaders
        headers[.accessControlAllowMethods] = "GET, OPTIONS"
        headers[.accessControlAllowHeaders] = "Authorization, Content-Type, MCP-Protocol-Version"
        headers[.accessControlMaxAge] = "86400"
        return Response(status: .noContent, headers: headers)
    }

    static var corsHeaders: HTTPFields { [.accessControlAllowOrigin: "*"] }
}
