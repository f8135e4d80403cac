import Hummingbird

/// `GET /traefik/dynamic-config`: Traefik's HTTP provider polls the configuration generated from the current
/// policy. Only trusted proxies may read it, since it maps the internal backends.
enum TraefikProviderEndpoint {
    static func respond(gateway: Gateway, context: GatewayRequestContext) -> Response {
        guard gateway.engine.policy.gateway.trustedProxies.containsAddress(context.peerAddress) else {
            return Response(status: .forbidden, headers: [.cacheControl: "no-store"])
        }
        guard let configuration = gateway.traefikConfiguration else {
            return Response(status: .serviceUnavailable, headers: [.cacheControl: "no-store"])
        }
        return Response(
            status: .ok, headers: [.contentType: "application/yaml", .cacheControl: "no-store"],
            body: .init(byteBuffer: .init(string: configuration)))
    }
}
