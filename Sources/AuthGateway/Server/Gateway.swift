import AsyncHTTPClient
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import TokenStore

/// The assembled gateway: the current policy's decision engine, the store, and the HTTP application serving them.
///
/// The policy can be replaced while requests are served (`apply`); each request decides on one consistent policy.
public final class Gateway: Sendable {
    /// Everything derived from one policy, swapped as a whole.
    struct Generation: Sendable {
        let engine: DecisionEngine
        let jwt: JWTAuthenticator
        /// Traefik dynamic configuration for this policy, when the provider endpoint is on and generation succeeded.
        let traefikConfiguration: String?
        /// What the reverse proxy strips from requests for this policy's header names.
        let proxyHeaders: ProxyHeaders
    }

    private let generation: Mutex<Generation>
    private let store: TokenStore
    private let httpClient: HTTPClient
    private let traefikOptions: TraefikConfiguration.Options?
    let logger: Logger
    public let usage: LastUsedRecorder
    /// Outlives policy reloads: the keys do not change with the policy.
    private let keyCache = APIKeyCache()
    /// Failed credentials per client address (`gateway.failed_credentials`); outlives policy reloads, so a reload
    /// does not hand a guesser a fresh budget.
    let failedCredentials = SourceRateLimiter()
    /// MCP sessions opened through the reverse proxy, bound to their principals; they outlive policy reloads.
    public let sessionBindings = SessionBindings()
    /// Circuit breakers, health checks and stream counts of the path-style backends.
    public let backendHealth = BackendHealth()

    /// - Parameter traefikGatewayURL: when set, `GET /traefik/dynamic-config` serves Traefik's dynamic configuration
    ///   for the current policy, with forwardAuth pointing at this URL.
    public init(policy: Policy, store: TokenStore, httpClient: HTTPClient = .shared, logger: Logger, traefikGatewayURL: String? = nil) {
        self.store = store
        self.httpClient = httpClient
        self.logger = logger
        self.usage = LastUsedRecorder(store: store, logger: logger)
        self.traefikOptions = traefikGatewayURL.map { TraefikConfiguration.Options(gatewayURL: $0) }
        do {
            // The first start generates the authorization server's signing key, so its JWKS is never empty.
            _ = try store.currentSigningKey()
        } catch {
            logger.error("cannot create the signing key", metadata: ["error": "\(error)"])
        }
        self.generation = Mutex(
            Self.makeGeneration(
                policy: policy, store: store, usage: usage, keyCache: keyCache, failedCredentials: failedCredentials, client: httpClient, logger: logger,
                traefik: traefikOptions, previous: nil))
        backendHealth.sync(with: policy)
    }

    public var engine: DecisionEngine { generation.withLock { $0.engine } }
    public var jwt: JWTAuthenticator { generation.withLock { $0.jwt } }
    var traefikConfiguration: String? { generation.withLock { $0.traefikConfiguration } }
    var proxyHeaders: ProxyHeaders { generation.withLock { $0.proxyHeaders } }

    /// Replaces the policy for every request that starts from now on.
    public func apply(_ policy: Policy) {
        let previous = generation.withLock { $0 }
        let next = Self.makeGeneration(
            policy: policy, store: store, usage: usage, keyCache: keyCache, failedCredentials: failedCredentials, client: httpClient, logger: logger,
            traefik: traefikOptions, previous: previous)
        generation.withLock { $0 = next }
        backendHealth.sync(with: policy)
        sessionBindings.removeRoutes(notIn: Set(policy.routes.filter { $0.backend.pathStyle != nil }.map(\.name)))
    }

    private static func makeGeneration(
        policy: Policy, store: TokenStore, usage: LastUsedRecorder, keyCache: APIKeyCache, failedCredentials: SourceRateLimiter, client: HTTPClient,
        logger: Logger,
        traefik: TraefikConfiguration.Options?, previous: Generation?
    ) -> Generation {
        let jwt = JWTAuthenticator(issuers: policy.issuers, client: client, logger: logger, store: store, reusing: previous?.jwt)
        let authenticators: [any CredentialAuthenticator] = [
            APIKeyAuthenticator(store: store, keyHeader: policy.gateway.apiKeyHeader, usage: usage, cache: keyCache),
            jwt,
            PathContextAuthenticator(),
        ]
        var traefikConfiguration = previous?.traefikConfiguration
        if let traefik {
            do {
                traefikConfiguration = try TraefikConfiguration(policy: policy, options: traefik).yaml()
            } catch {
                logger.error("cannot generate Traefik configuration; serving the last good one", metadata: ["error": "\(error)"])
            }
        }
        return Generation(
            engine: DecisionEngine(policy: policy, authenticators: authenticators, failedCredentials: failedCredentials), jwt: jwt, traefikConfiguration: traefikConfiguration,
            proxyHeaders: ProxyHeaders(gateway: policy.gateway))
    }

    /// The router with every endpoint the gateway serves.
    public func makeRouter() -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        let endpoint = AuthEndpoint(gateway: self)
        for method in AuthEndpoint.methods {
            router.on("/auth", method: method) { request, context in await endpoint.respond(request, context: context) }
        }
        EnvoyAuthEndpoint.register(on: router, endpoint: endpoint)
        MetadataEndpoint.register(on: router, gateway: self)
        let issuerPath = engine.policy.builtinIssuer.map { AuthorizationServerContext.path(of: $0.issuer) } ?? ""
        AuthorizationServer(store: store, currentPolicy: { [unowned self] in self.engine.policy }).register(on: router, issuerPath: issuerPath)
        router.get("/healthz") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: .init(byteBuffer: .init(string: #"{"status":"ok"}"#)))
        }
        router.get("/healthz/backends") { _, _ in
            let (json, healthy) = self.backendHealth.report()
            return Response(
                status: healthy ? .ok : .serviceUnavailable, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                body: .init(byteBuffer: .init(string: json)))
        }
        if traefikOptions != nil {
            router.get("/traefik/dynamic-config") { _, context in TraefikProviderEndpoint.respond(gateway: self, context: context) }
        }
        // Last, so that it wraps only the not-found responder: requests for the gateway's own endpoints (and the
        // /auth hot path) never pass through it.
        router.add(middleware: ProxyEndpoint(gateway: self))
        return router
    }

    /// Hummingbird's HTTP/1 server with the decision endpoints answered by `FastAuthHandler` ahead of the router
    /// (`FastAuthChannel`; the router keeps serving them too, for requests that queue behind another endpoint's answer).
    public var httpServer: HTTPServerBuilder {
        let endpoint = AuthEndpoint(gateway: self)
        let logger = logger
        return HTTPServerBuilder { responder in FastAuthChannel(responder: responder, endpoint: endpoint, logger: logger) }
    }

    /// The HTTP application listening on `host:port`, with the batched key-usage writer and any extra services
    /// (such as the policy reloader) running beside it; `timeouts` bound how long a connection may wait for a request.
    public func makeApplication(
        host: String, port: Int, services: [any Service] = [], timeouts: ConnectionTimeouts = .init(),
        onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> GatewayApplication {
        GatewayApplication(
            router: makeRouter(), endpoint: AuthEndpoint(gateway: self), host: host, port: port,
            // Traefik opens a new connection for most auth calls: a deep accept queue keeps bursts from being refused.
            backlog: 4096,
            services: [usage, BackendHealthMonitor(health: backendHealth, bindings: sessionBindings, logger: logger, tick: .seconds(1))] + services,
            timeouts: timeouts, onServerRunning: onServerRunning, logger: logger)
    }
}

extension Gateway {
    /// How many event loop threads serve connections (SwiftNIO's shared group, also used by the gateway's HTTP
    /// clients); takes effect only when called before the first gateway is made.
    public static func setEventLoopThreads(_ count: Int) {
        NIOSingletons.groupLoopCountSuggestion = count
    }
}
