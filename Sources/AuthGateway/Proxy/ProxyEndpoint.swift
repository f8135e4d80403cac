import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The gateway as reverse proxy for path-style routes: decides each request with the same pipeline as `/auth`,
/// checks session ownership, rewrites the path and streams the exchange.
///
/// Registered as the router's last middleware, so it sees only requests no endpoint of the gateway matched (the
/// `/auth` path never reaches it) and answers only those a path-style route of the current policy matches; every
/// other request falls through to 404.
struct ProxyEndpoint: RouterMiddleware {
    typealias Context = GatewayRequestContext

    let gateway: Gateway

    static let sessionHeader = HTTPField.Name("Mcp-Session-Id")!

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let engine = gateway.engine
        // A request that cannot be read as a route request is not ours: the 404 below says nothing about routes.
        guard let forwarded = try? ForwardedRequest(direct: request.head, peer: context.peerAddress, trustedProxies: engine.policy.gateway.trustedProxies),
            case .matched(let matched) = engine.matcher.match(forwarded), let backend = matched.route.backend.pathStyle
        else {
            return try await next(request, context)
        }
        return await proxy(request, forwarded: forwarded, route: matched.route, backend: backend, engine: engine, context: context)
    }

    private func proxy(
        _ request: Request, forwarded: ForwardedRequest, route: RoutePolicy, backend: PathStyleBackend, engine: DecisionEngine,
        context: Context
    ) async -> Response {
        let allow: Decision.Allow
        switch await engine.decide(forwarded) {
        case .allow(let allowed) where allowed.route.name == route.name:
            allow = allowed
        case .allow:
            return deny(.forbidden, route: route, reason: "the request matched another route on a second look", engine: engine, context: context)
        case .deny(let denial):
            let rendered = DenialResponse(denial, gateway: engine.policy.gateway)
            context.logger.info("proxy deny", metadata: ["status": "\(rendered.status)", "route": "\(route.name)", "reason": "\(denial.reason)"])
            return AuthEndpoint.response(rendered)
        }
        let owner = SessionOwner(allow.principal)
        let bindings = gateway.sessionBindings
        let relative = forwarded.path.dropFirst(route.path.literalPrefix.count)

        // Which upstream path, and which session the request names.
        let upstreamPath: String
        var upstreamQuery: String?
        var session: SessionBindings.Key?
        let isMainPath = relative.isEmpty || relative == "/"
        if isMainPath {
            if let id = request.headers[Self.sessionHeader] {
                session = SessionBindings.Key(route: route.name, session: id)
            }
            do {
                upstreamPath = backend.basePath + (try backend.template.render(for: allow.principal))
            } catch {
                return deny(.forbidden, route: route, reason: "\(error)", engine: engine, context: context)
            }
        } else {
            // Only the message URL a stream of this principal announced is forwarded: anything else below the
            // route's prefix would let a client choose an upstream path (and so an identity) itself.
            // The query is read once, as the backend reads it, and forwarded as it was read (finding 4).
            let query: MessageQuery
            do {
                query = try MessageQuery(parsing: forwarded.query ?? "")
            } catch {
                let description = error == .repeatedSession ? "The query names the session more than once." : "The query is not valid percent-encoded UTF-8."
                return StreamingProxy.errorResponse(.badRequest, error: "invalid_request", description: description)
            }
            guard let id = query.sessionID else {
                return StreamingProxy.errorResponse(.notFound, error: "not_found", description: "No such endpoint.")
            }
            session = SessionBindings.Key(route: route.name, session: id)
            upstreamPath = String(relative)
            upstreamQuery = query.serialized
        }
        if let session {
            switch bindings.lookup(session, for: owner) {
            case .unknown:
                return StreamingProxy.errorResponse(.notFound, error: "unknown_session", description: "The session does not exist or has ended.")
            case .foreign:
                return deny(.forbidden, route: route, reason: "session \(session.session.prefix(8))… belongs to another principal", engine: engine, context: context)
            case .owned(let messagePath):
                if !isMainPath && messagePath != upstreamPath {
                    return StreamingProxy.errorResponse(.notFound, error: "not_found", description: "No such endpoint.")
                }
            }
        }

        // The per-principal cap counts what opens or holds a stream; a message POST (or DELETE) in a session the
        // principal already owns does not, or a principal at its cap could not use the sessions it has.
        let streamOwner = session != nil && request.method != .get ? nil : BackendHealth.principalKey(allow.principal)
        switch gateway.backendHealth.admit(route.name, principal: streamOwner) {
        case .circuitOpen?:
            return StreamingProxy.errorResponse(
                .serviceUnavailable, error: "backend_unavailable", description: "The backend is failing; retry later.", retryAfter: "\(backend.breaker.cooldown.components.seconds)")
        case .tooManyStreams?:
            return StreamingProxy.errorResponse(.serviceUnavailable, error: "too_many_streams", description: "Too many open streams to this backend.", retryAfter: "5")
        case .tooManyStreamsForPrincipal?:
            return StreamingProxy.errorResponse(.tooManyRequests, error: "too_many_streams", description: "You have too many open streams to this backend.", retryAfter: "5")
        case nil:
            break
        }
        let lease = ProxyLease(route: route.name, principal: streamOwner, health: gateway.backendHealth, bindings: bindings)

        var upstream = HTTPClientRequest(url: backend.origin + upstreamPath + (upstreamQuery.map { "?" + $0 } ?? ""))
        upstream.method = .init(rawValue: request.method.rawValue)
        upstream.headers = gateway.proxyHeaders.upstream(
            from: request.headers, identity: allow.headers, clientAddress: forwarded.clientAddress, publicHost: forwarded.host,
            proto: forwarded.proto, prefix: route.path.literalPrefix)
        // The upload reads the client's body only through `uploaded`, which is stopped before any answer (finding A).
        var uploaded: ProxiedRequestBody?
        if let length = request.headers[.contentLength].flatMap(Int.init) {
            if length > 0 {
                uploaded = ProxiedRequestBody(request.body, declaredLength: length)
                upstream.body = .stream(uploaded!.chunks, length: .known(Int64(length)))
            }
        } else if request.headers[.transferEncoding] != nil {
            uploaded = ProxiedRequestBody(request.body, declaredLength: nil)
            upstream.body = .stream(uploaded!.chunks, length: .unknown)
        }

        let proxy = StreamingProxy(client: ProxyHTTPClient.client(idleTimeout: backend.idleTimeout), idleTimeout: backend.idleTimeout)
        let outcome = await proxy.execute(upstream, logger: context.logger)
        let bodySent = await uploaded?.stop() ?? true
        let response: HTTPClientResponse
        switch outcome {
        case .success(let answered) where bodySent:
            gateway.backendHealth.record(route.name, error: nil)
            response = answered
        case .success:
            // The backend answered before it had the whole body (an SSE-only server's 405, say): the rest of the
            // body is not read, so the connection cannot carry another request.
            gateway.backendHealth.record(route.name, error: nil)
            lease.release()
            context.logger.warning("proxy upstream answered before the request body was sent", metadata: ["route": "\(route.name)"])
            return Self.closing(StreamingProxy.errorResponse(.badGateway, error: "bad_gateway", description: "The backend answered before reading the request body."))
        case .failure(let failure):
            if !Task.isCancelled { gateway.backendHealth.record(route.name, error: failure.reason) }
            lease.release()
            context.logger.warning("proxy upstream failure", metadata: ["route": "\(route.name)", "error": "\(failure.reason)"])
            let name = failure.status == .gatewayTimeout ? "upstream_timeout" : "bad_gateway"
            let answer = StreamingProxy.errorResponse(failure.status, error: name, description: "The backend did not answer.")
            return bodySent ? answer : Self.closing(answer)
        }

        // Streamable HTTP: the answer to initialize names the new session, which belongs to this principal.
        let ok = (200..<300).contains(Int(response.status.code))
        if isMainPath, session == nil, ok, let id = response.headers.first(name: "mcp-session-id") {
            let key = SessionBindings.Key(route: route.name, session: id)
            guard bindings.bind(key, to: owner, idleTimeout: backend.idleTimeout) else {
                lease.release()
                return StreamingProxy.errorResponse(.badGateway, error: "bad_gateway", description: "The backend reused a session of another principal.")
            }
        }
        if request.method == .delete, let session, ok { bindings.remove(session) }

        var rewriter: SSEEndpointRewriter?
        let isEventStream = response.headers.first(name: "content-type")?.lowercased().hasPrefix("text/event-stream") == true
        if isEventStream, isMainPath, request.method == .get {
            if let session {
                lease.keepAlive(session)
            } else {
                rewriter = endpointRewriter(route: route, backend: backend, owner: owner, lease: lease, logger: context.logger)
            }
        }
        return StreamingProxy.response(to: response, method: request.method, rewriter: rewriter, lease: lease, logger: context.logger)
    }

    /// Rewrites the SSE `endpoint` event: the backend's message URL becomes the route's public prefix followed by
    /// the backend's path, and its session is bound to `owner` until this stream ends.
    private func endpointRewriter(route: RoutePolicy, backend: PathStyleBackend, owner: SessionOwner, lease: ProxyLease, logger: Logger) -> SSEEndpointRewriter {
        let bindings = gateway.sessionBindings
        let prefix = route.path.literalPrefix
        let routeName = route.name
        let idleTimeout = backend.idleTimeout
        let origin = backend.origin
        return SSEEndpointRewriter { announced in
            guard let (path, query) = Self.upstreamTarget(of: announced, origin: origin), let id = (try? MessageQuery(parsing: query))?.sessionID else {
                logger.warning("proxy dropped an endpoint event it cannot route back", metadata: ["route": "\(routeName)"])
                return nil
            }
            let key = SessionBindings.Key(route: routeName, session: id)
            guard bindings.bind(key, to: owner, messagePath: path, openStreams: 1, idleTimeout: idleTimeout) else { return nil }
            guard lease.own(key) else {
                bindings.remove(key)
                return nil
            }
            return prefix + path + "?" + query
        }
    }

    /// The path and query of an announced message URL: a path-absolute reference, or an absolute URL on the
    /// backend's own origin. The path must pass the same checks as a request path, and is normalised as one
    /// (`ForwardedRequest.normalisedPath`), so the client's request for it equals the bound path byte for byte.
    static func upstreamTarget(of announced: String, origin: String) -> (path: String, query: String)? {
        var target = announced.trimmingCharacters(in: .whitespaces)
        if target.hasPrefix(origin + "/") {
            target.removeFirst(origin.count)
        } else if !target.hasPrefix("/") || target.hasPrefix("//") {
            return nil
        }
        guard let (path, query) = try? ForwardedRequest.splitURI(target), let query, let normalised = try? ForwardedRequest.normalisedPath(path) else { return nil }
        return (normalised.path, query)
    }

    /// `response` marked as the last on its connection: the client's body was not read to its end.
    private static func closing(_ response: Response) -> Response {
        var response = response
        response.headers[.connection] = "close"
        return response
    }

    private func deny(_ kind: Denial.Kind, route: RoutePolicy, reason: String, engine: DecisionEngine, context: Context) -> Response {
        context.logger.info("proxy deny", metadata: ["route": "\(route.name)", "reason": "\(reason)"])
        return AuthEndpoint.response(DenialResponse(Denial(kind: kind, route: route, reason: reason), gateway: engine.policy.gateway))
    }
}
