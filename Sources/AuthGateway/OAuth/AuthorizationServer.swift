import AsyncHTTPClient
import Foundation
import Hummingbird
import TokenStore

/// The built-in OAuth 2.1 authorization server: RFC 8414 metadata and the `/oauth/*` endpoints, answering only
/// while the current policy has an issuer of `kind: builtin` (404 otherwise).
struct AuthorizationServer: Sendable {
    let store: TokenStore
    let currentContext: @Sendable () -> AuthorizationServerContext?
    /// Per-source-address buckets of the `rate_limits` (issue 11 finding 7), shared by every request.
    let limiter = SourceRateLimiter()

    init(store: TokenStore, currentPolicy: @escaping @Sendable () -> Policy) {
        self.store = store
        self.currentContext = { AuthorizationServerContext(policy: currentPolicy()) }
    }

    /// Registers every endpoint under `/oauth/` and, when the issuer URL has a path, under `<path>/oauth/` too.
    func register(on router: Router<GatewayRequestContext>, issuerPath: String) {
        let tokens = AccessTokenIssuer(store: store)
        let fetcher = ClientMetadataDocumentFetcher(store: store)
        let validator = AuthorizationRequestValidator(store: store, metadataDocuments: fetcher)
        let authorize = AuthorizeEndpoint(store: store, validator: validator)
        let token = TokenEndpoint(store: store, tokens: tokens)
        let registration = ClientRegistrationEndpoint(store: store)
        let revocation = RevocationEndpoint(store: store, tokens: tokens)
        let introspection = IntrospectionEndpoint(store: store, tokens: tokens)

        for prefix in Set(["", issuerPath]) {
            let base = prefix + "/oauth/"
            SigningKeySetEndpoint.register(on: router, path: base + "jwks.json", store: store)
            router.get(RouterPath(base + "authorize")) { request, peer in
                await serve(request, peer) { context in
                    // Only a request that would fetch a metadata document spends from that limit.
                    if let clientID = OAuthParameters(encoded: request.uri.query ?? "")["client_id"], context.settings.clientMetadataDocuments,
                        fetcher.wouldFetch(clientID), let wait = RateLimitScope.current?.exceeded("metadata_fetch", \.metadataFetch)
                    {
                        return RateLimitScope.pageResponse(wait, what: "application lookups")
                    }
                    return await authorize.show(request, context: context)
                }
            }
            router.post(RouterPath(base + "authorize")) { request, peer in await serve(request, peer) { await authorize.submit(request, context: $0) } }
            let posts: [(String, @Sendable (Request, AuthorizationServerContext) async -> Response)] = [
                ("token", token.respond), ("register", registration.respond), ("revoke", revocation.respond), ("introspect", introspection.respond),
            ]
            for (name, handler) in posts {
                router.post(RouterPath(base + name)) { request, peer in
                    await serve(request, peer) { context in
                        if name == "register", let wait = RateLimitScope.current?.exceeded("registration", \.registration) {
                            return RateLimitScope.jsonResponse(wait, what: "registrations")
                        }
                        return await handler(request, context)
                    }
                }
                router.on(RouterPath(base + name), method: .options) { _, _ in OAuthResponse.preflight() }
            }
        }
        var metadataPaths = AuthorizationServerMetadata.wellKnownNames.flatMap { ["/.well-known/\($0)", "/.well-known/\($0)/**"] }
        if !issuerPath.isEmpty { metadataPaths.append(issuerPath + "/.well-known/openid-configuration") }
        for path in metadataPaths {
            router.get(RouterPath(path)) { request, _ in metadata(request) }
            router.on(RouterPath(path), method: .options) { _, _ in MetadataEndpoint.preflight() }
        }
    }

    /// Runs `body` under the current policy's authorization server, with the request's rate-limit scope set.
    private func serve(_ request: Request, _ peer: GatewayRequestContext, _ body: (AuthorizationServerContext) async -> Response) async -> Response {
        guard let context = currentContext() else {
            return OAuthResponse.json(["error": "not_found", "error_description": "this gateway runs no authorization server"], status: .notFound)
        }
        // The client is the trusted proxy's X-Forwarded-For entry, as for path-style requests; when that cannot
        // be read, the peer itself (so a malformed header shares the proxy's bucket instead of escaping limits).
        let trusted = context.policy.gateway.trustedProxies
        let source = (try? ForwardedRequest(direct: request.head, peer: peer.peerAddress, trustedProxies: trusted))?.clientAddress ?? peer.peerAddress
        let scope = RateLimitScope(source: SourceRateLimiter.sourceKey(source), limits: context.settings.rateLimits, limiter: limiter)
        return await RateLimitScope.$current.withValue(scope) { await body(context) }
    }

    private func metadata(_ request: Request) -> Response {
        guard let context = currentContext(), AuthorizationServerMetadata.addresses(request.uri.path, context: context) else {
            return MetadataEndpoint.json(#"{"error":"not_found","error_description":"No authorization server metadata at this path."}"#, status: .notFound)
        }
        let data = (try? JSONSerialization.data(withJSONObject: AuthorizationServerMetadata.document(context), options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return MetadataEndpoint.json(String(decoding: data, as: UTF8.self), status: .ok)
    }
}
