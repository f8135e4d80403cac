import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The forwardAuth endpoint (`/auth`, any method): turns a decision into Traefik's allow/deny answer.
struct AuthEndpoint: Sendable {
    let gateway: Gateway

    /// The methods a proxy may call the decision endpoints with (Traefik: GET, or the client's with
    /// `preserveRequestMethod`; Envoy: the client's); the decision never depends on them.
    static let methods: [HTTPRequest.Method] = [.get, .head, .post, .put, .patch, .delete, .options]

    func respond(_ request: Request, context: GatewayRequestContext) async -> Response {
        await respond(request, forwarded: request.headers, context: context)
    }

    /// Decides on `forwarded`, the headers describing the original request (the request's own for Traefik, nginx
    /// and Caddy; restated ones for Envoy).
    func respond(_ request: Request, forwarded: HTTPFields, context: GatewayRequestContext) async -> Response {
        let engine = gateway.engine
        let decision = await engine.decide(headers: forwarded, peer: context.peerAddress)
        switch decision {
        case .allow(let allow):
            var headers = HTTPFields(allow.headers)
            headers[.cacheControl] = "no-store"
            headers[.contentLength] = "0"
            context.logger.debug(
                "allow",
                metadata: [
                    "route": "\(allow.route.name)", "subject": "\(allow.principal.subject)",
                    "method": "\(allow.principal.method.rawValue)", "key_id": "\(allow.principal.keyID)",
                ])
            return Response(status: .ok, headers: headers)
        case .deny(let denial):
            let rendered = DenialResponse(denial, gateway: engine.policy.gateway)
            context.logger.info(
                "deny",
                metadata: [
                    "status": "\(rendered.status)", "route": "\(denial.route?.name ?? "-")", "reason": "\(denial.reason)",
                ])
            return Self.response(rendered)
        }
    }

    static func response(_ rendered: DenialResponse) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        if let challenge = rendered.challenge { headers[.wwwAuthenticate] = challenge }
        if let retryAfter = rendered.retryAfter { headers[.retryAfter] = retryAfter }
        let body = ByteBuffer(string: rendered.body)
        headers[.contentLength] = String(body.readableBytes)
        return Response(status: .init(code: rendered.status), headers: headers, body: .init(byteBuffer: body))
    }
}
