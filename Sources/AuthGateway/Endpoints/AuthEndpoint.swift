import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The forwardAuth endpoint (`/auth`, any method): turns a decision into Traefik's allow/deny answer.
///
/// The answer is built once, independent of the server that writes it: Hummingbird's router (here) and the
/// plain SwiftNIO fast path (`FastAuthHandler`) send the same status, headers and body.
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
        let answer = await answer(forwarded: forwarded, peer: context.peerAddress, logger: context.logger)
        return Response(status: answer.head.status, headers: answer.head.headerFields, body: answer.body.map { .init(byteBuffer: $0) } ?? .init())
    }

    /// A denial as a Hummingbird response, for router endpoints that refuse a request the way `/auth` does.
    static func response(_ rendered: DenialResponse) -> Response {
        let answer = AuthAnswer(rendered)
        return Response(status: answer.head.status, headers: answer.head.headerFields, body: answer.body.map { .init(byteBuffer: $0) } ?? .init())
    }

    /// The decision on `forwarded` from `peer`, rendered as status, headers and body.
    func answer(forwarded: HTTPFields, peer: IPAddress?, logger: Logger) async -> AuthAnswer {
        let engine = gateway.engine
        let decision = await engine.decide(headers: forwarded, peer: peer)
        switch decision {
        case .allow(let allow):
            var headers = HTTPFields(allow.headers)
            headers[.cacheControl] = "no-store"
            headers[.contentLength] = "0"
            logger.debug(
                "allow",
                metadata: [
                    "route": "\(allow.route.name)", "subject": "\(allow.principal.subject)",
                    "method": "\(allow.principal.method.rawValue)", "key_id": "\(allow.principal.keyID)",
                ])
            return AuthAnswer(head: HTTPResponse(status: .ok, headerFields: headers), body: nil)
        case .deny(let denial):
            let rendered = DenialResponse(denial, gateway: engine.policy.gateway)
            logger.info(
                "deny",
                metadata: [
                    "status": "\(rendered.status)", "route": "\(denial.route?.name ?? "-")", "reason": "\(denial.reason)",
                ])
            return AuthAnswer(rendered)
        }
    }
}
