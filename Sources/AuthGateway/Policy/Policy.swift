import Foundation

/// The whole decision policy: gateway settings, trusted token issuers and the ordered routes.
public struct Policy: Sendable {
    public var gateway: GatewaySettings
    /// Issuers by their policy name, in declaration order.
    public var issuers: [IssuerPolicy]
    /// Routes in file order; the first that matches a request decides it.
    public var routes: [RoutePolicy]

    public func issuer(named name: String) -> IssuerPolicy? { issuers.first { $0.name == name } }

    /// The gateway's own authorization server, when the policy defines an issuer of `kind: builtin`.
    public var builtinIssuer: IssuerPolicy? { issuers.first(where: \.isBuiltin) }
}

/// Settings that apply to every route.
public struct GatewaySettings: Sendable {
    /// The public origin clients use, without a trailing slash (`https://mcp.example.com`).
    public var publicURL: String
    /// The `realm` of every `WWW-Authenticate` challenge.
    public var realm: String
    /// Peers whose `X-Forwarded-*` headers are believed. Empty means no peer is trusted.
    public var trustedProxies: [IPNetwork]
    public var identityHeaders: IdentityHeaderNames
    /// A header that carries an API key as its whole value, besides `Authorization: Bearer`.
    public var apiKeyHeader: String?
    /// How many failed credentials (`invalid_token` that proves nothing) one client address may send before the
    /// decision endpoints answer 429; nil when off (`failed_credentials: off`).
    public var failedCredentials: RateLimit? = GatewaySettings.defaultFailedCredentials
    /// 30 a minute: a client whose key was revoked retries far less often; guessing gets one try per 2 s.
    public static let defaultFailedCredentials = RateLimit(count: 30, period: 60)

    /// `scheme://host[:port]` of the public URL: where well-known documents live even when `publicURL` has a path.
    public var origin: String {
        guard let components = URLComponents(string: publicURL), let scheme = components.scheme, let host = components.host else { return publicURL }
        let port = components.port.map { ":\($0)" } ?? ""
        let shownHost = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return "\(scheme)://\(shownHost)\(port)"
    }
}

/// The names of the identity headers the gateway answers with on allow.
public struct IdentityHeaderNames: Sendable, Equatable {
    public var subject = "X-Auth-Subject"
    public var method = "X-Auth-Method"
    public var scopes = "X-Auth-Scopes"
    public var client = "X-Auth-Client"
    public var issuer = "X-Auth-Issuer"
    public var keyID = "X-Auth-Key-Id"
    public var route = "X-Auth-Route"

    public init() {}

    /// Every header in the contract, in a stable order: Traefik must list all of them in `authResponseHeaders`.
    public var all: [String] { [subject, method, scopes, client, issuer, keyID, route] }
}

/// A kind of credential a route accepts.
public enum CredentialKind: String, Sendable, CaseIterable {
    case apiKey = "api_key"
    case jwt
    case pathContext = "path_context"

    /// The value of the `X-Auth-Method` header for principals of this kind.
    public var headerValue: String {
        switch self {
        case .apiKey: "api_key"
        case .jwt: "jwt"
        case .pathContext: "path"
        }
    }
}

/// A trusted issuer of JWT access tokens and how to verify them.
public struct IssuerPolicy: Sendable, Equatable {
    public var name: String
    /// The exact `iss` value tokens must carry.
    public var issuer: String
    public var keySource: KeySource
    /// Asymmetric algorithms accepted from this issuer; `none` and HMAC are refused by the loader.
    public var algorithms: [String]
    public var audience: AudienceRule
    public var claims: ClaimMapping
    /// Clock skew tolerated for `exp`, `nbf` and `iat`.
    public var leeway: TimeInterval
    /// The longest lifetime a token may state (`exp - iat`, or `exp - now` without `iat`), like Kong's
    /// `maximum_expiration`: a token minted for years (a leaked signing key, an issuer bug) is refused.
    public var maxTokenLifetime: TimeInterval = IssuerPolicy.defaultMaxTokenLifetime
    /// The shortest time between two JWKS fetches caused by unknown `kid`s or failures.
    public var jwksMinRefreshInterval: TimeInterval
    /// How long fetched keys are used before they are fetched again.
    public var jwksCacheTTL: TimeInterval
    /// How long the last good keys keep verifying tokens while the issuer cannot be reached.
    public var jwksStaleLimit: TimeInterval
    /// How long one fetch of the JWKS (or of the discovery document) may take in all, body included, before it counts
    /// as failed: a slow or stalled issuer must not hold the decisions waiting on it.
    public var jwksFetchTimeout: TimeInterval = IssuerPolicy.defaultJWKSFetchTimeout
    /// `jwks_fetch_timeout` when the policy does not set it.
    public static let defaultJWKSFetchTimeout: TimeInterval = 5
    /// Set for the gateway's own authorization server (`kind: builtin`), nil for external issuers.
    public var authorizationServer: AuthorizationServerSettings? = nil

    public var isBuiltin: Bool { authorizationServer != nil }

    /// `max_token_lifetime` when the policy does not set it: a day, the longest `access_token_ttl` as well.
    public static let defaultMaxTokenLifetime: TimeInterval = 86400

    /// Where the issuer's signing keys come from.
    public enum KeySource: Sendable, Equatable {
        case jwksURL(String)
        /// `<issuer>/.well-known/openid-configuration`, then its `jwks_uri`.
        case discovery
        /// The built-in authorization server's signing keys, read from the token store.
        case store
    }

    /// Which audience a token must name.
    public enum AudienceRule: Sendable, Equatable {
        /// The route's resource URL (RFC 8707 / MCP).
        case routeResource
        /// One of these fixed values.
        case fixed([String])
    }
}

/// Which claims carry the principal's subject, scopes, groups and client.
public struct ClaimMapping: Sendable, Equatable {
    public var subject = "sub"
    /// Read first; `scp` is the fallback when this claim is absent.
    public var scopes = "scope"
    public var groups = "groups"
    public var client = "client_id"

    public init() {}
}

/// One protected route: what it matches, which credentials it accepts and what it requires.
public struct RoutePolicy: Sendable {
    public var name: String
    /// Lower-case host name without port, or nil for any host.
    public var host: String?
    public var path: PathTemplate
    /// Upper-case method names, or nil for every method.
    public var methods: Set<String>?
    /// The canonical resource URL: JWT `aud` must contain it and metadata describes it.
    public var resource: String
    /// Credential kinds tried in this order.
    public var accept: [CredentialKind]
    /// Issuer names whose JWTs are accepted here (all issuers when the policy lists none).
    public var issuers: [String]
    public var requirements: Requirements
    public var pathContext: PathContextRule?
    public var backend: Backend
    /// Where the route was declared, for `policy explain` and logs.
    public var location: String
}

/// What an authenticated principal must satisfy on a route.
public struct Requirements: Sendable {
    public var scopes: [String] = []
    public var subjects: [String] = []
    public var groups: [String] = []
    /// Source networks the original client must come from (empty: any).
    public var networks: [IPNetwork] = []
    /// Path captures that must equal a field of the principal (`user_id: subject`).
    public var bindings: [CaptureBinding] = []
}

/// A path capture bound to a field of the authenticated principal.
public struct CaptureBinding: Sendable, Equatable {
    public var capture: String
    public var field: PrincipalField
}

/// A field of a principal that a path capture can be bound to.
public enum PrincipalField: String, Sendable, CaseIterable {
    case subject, client
}

/// Lets path captures alone identify a caller, but only from the listed networks.
public struct PathContextRule: Sendable {
    public var networks: [IPNetwork]
    /// The capture that names the subject.
    public var subjectCapture: String
    /// The capture that names the client, if any.
    public var clientCapture: String?
}

/// How the backend behind a route expects identity.
public struct Backend: Sendable {
    public var style: Style
    /// The backend's URL: the Traefik service address, or the upstream the gateway proxies to for style `path`.
    public var url: String?
    /// A path prefix Traefik removes (after the forwardAuth decision) before the request reaches the backend.
    public var stripPrefix: String?

    public enum Style: Sendable {
        /// Identity headers only.
        case headers
        /// Identity headers plus the backend's own secret in its header, replacing the client's credential.
        case credential(BackendCredential)
        /// The gateway itself proxies to the backend, writing the principal's identity into the upstream path.
        case path(PathStyleBackend)
    }

    /// The path-style settings, when the gateway proxies this route itself.
    public var pathStyle: PathStyleBackend? {
        if case .path(let backend) = style { backend } else { nil }
    }
}

/// A backend's own secret and the header it goes in.
public struct BackendCredential: Sendable {
    public var header: String
    public var prefix: String
    /// Where the secret was read from, for messages (`env TRELLO_TOKEN`); never the secret itself.
    public var origin: String
    /// The secret; nil when its source was empty or missing, in which case the route fails closed.
    public var value: String?

    /// The complete header value sent to the backend.
    public var headerValue: String? { value.map { prefix + $0 } }
}
