/// A backend that takes identity from its URL path (OpenMemory): the gateway proxies to it and writes the
/// authenticated principal into the upstream path.
public struct PathStyleBackend: Sendable {
    /// The upstream origin and optional base path, without a trailing slash (`http://openmemory:8765`).
    public var upstream: String
    /// `scheme://host[:port]` of the upstream.
    public var origin: String
    /// The path of the upstream URL (empty or `/base`), put before the rendered template.
    public var basePath: String
    /// The upstream path of the route's own URL, filled from the principal.
    public var template: UpstreamPathTemplate
    /// Simultaneous proxied requests (open streams included) the route allows; more get 503.
    public var maxStreams: Int
    /// Of those, how many one principal (issuer and subject) may hold at once; more get 429, so that one caller
    /// cannot take every slot of the route.
    public var maxStreamsPerPrincipal: Int
    /// How long a stream (or an unanswered request) may stay silent before it is closed; also how long an idle
    /// Streamable HTTP session stays bound.
    public var idleTimeout: Duration
    /// The upstream path the health check requests; any HTTP answer counts as alive.
    public var healthPath: String
    public var breaker: CircuitBreaker.Settings
    /// How often the gateway checks that the backend answers.
    public var healthInterval: Duration

    public static let defaultMaxStreams = 100
    /// An MCP client holds one stream and a few message POSTs; a person runs a handful of clients.
    public static let defaultMaxStreamsPerPrincipal = 10
    public static let defaultIdleTimeout = Duration.seconds(300)
    public static let defaultHealthInterval = Duration.seconds(10)
}
