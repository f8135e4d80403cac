import AsyncHTTPClient
import Hummingbird
import Logging
import TokenStore

/// The assembled gateway: policy, store, credential kinds and the HTTP application that serves them.
public struct Gateway: Sendable {
    public let engine: DecisionEngine
    public let usage: LastUsedRecorder
    public let jwt: JWTAuthenticator
    let logger: Logger

    public init(policy: Policy, store: TokenStore, httpClient: HTTPClient = .shared, logger: Logger) {
        let usage = LastUsedRecorder(store: store, logger: logger)
        let jwt = JWTAuthenticator(issuers: policy.issuers, client: httpClient, logger: logger)
        let authenticators: [any CredentialAuthenticator] = [
            APIKeyAuthenticator(store: store, keyHeader: policy.gateway.apiKeyHeader, usage: usage),
            jwt,
            PathContextAuthenticator(),
        ]
        self.engine = DecisionEngine(policy: policy, authenticators: authenticators)
        self.usage = usage
        self.jwt = jwt
        self.logger = logger
    }

    /// The router with every endpoint the gateway serves.
    public func makeRouter() -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        let endpoint = AuthEndpoint(engine: engine)
        for method: HTTPRequest.Method in [.get, .head, .post, .put, .patch, .delete, .options] {
            router.on("/auth", method: method) { request, context in await endpoint.respond(request, context: context) }
        }
        router.get("/healthz") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: .init(byteBuffer: .init(string: #"{"status":"ok"}"#)))
        }
        return router
    }

    /// The HTTP application listening on `host:port`, with the batched key-usage writer running beside it.
    public func makeApplication(host: String, port: Int, onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        Application(
            router: makeRouter(),
            configuration: .init(address: .hostname(host, port: port), serverName: nil, reuseAddress: true),
            services: [usage],
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? port) },
            logger: logger)
    }
}
