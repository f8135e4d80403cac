import Foundation

/// How the built-in OAuth 2.1 authorization server behaves: token lifetimes and who may become a client.
public struct AuthorizationServerSettings: Sendable, Equatable {
    /// Access tokens are short-lived JWTs; revocation still takes effect at once through the grant check.
    public var accessTokenLifetime: TimeInterval = 600
    /// How long a grant's refresh tokens keep working, counted from the consent.
    public var refreshTokenLifetime: TimeInterval = 30 * 86400
    public var codeLifetime: TimeInterval = 60
    /// How long a logged-in user has to answer the consent page.
    public var consentLifetime: TimeInterval = 600
    public var registration: Registration = .open
    /// Whether an HTTPS `client_id` is fetched as a Client ID Metadata Document.
    public var clientMetadataDocuments = true
    /// Lets metadata documents come from loopback or private addresses (development only).
    public var allowPrivateMetadataHosts = false
    /// Per-source-address limits on registration, sign-in and metadata fetches.
    public var rateLimits = RateLimits()

    public init() {}

    /// Who may use the dynamic client registration endpoint (RFC 7591).
    public enum Registration: Sendable, Equatable {
        case open
        /// Only callers presenting this initial access token; nil when its environment variable is unset (nobody).
        case token(environmentName: String, value: String?)
        case off
    }
}
