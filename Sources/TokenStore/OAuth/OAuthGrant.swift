import Foundation
import GRDB

/// One authorization a subject gave a client for a resource: the family of every code, refresh token and access
/// token that came from it. Revoking the grant ends all of them at once (access tokens carry its id as `sid`).
public struct OAuthGrant: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "oauth_grant"

    public var id: String
    public var clientID: String
    public var subject: String
    /// Space-separated granted scopes.
    public var scope: String
    /// The resource (RFC 8707) the tokens are for: their `aud`.
    public var resource: String
    public var createdAt: Date
    /// After this the family's refresh tokens stop working.
    public var expiresAt: Date
    public var revokedAt: Date?
    /// The API key the subject signed in with, if any: the grant ends when that key is revoked or expires, and its
    /// tokens keep the key's route restriction.
    public var apiKeyID: String? = nil
    /// Space-separated groups of the user who signed in (empty for API-key and machine grants), carried in the
    /// access tokens as the `groups` claim.
    public var groups: String = ""

    public var scopeList: [String] { scope.split(separator: " ").map(String.init) }
}

/// A single-use authorization code, stored by digest.
public struct AuthorizationCode: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "oauth_code"

    public var digest: Data
    public var grantID: String
    public var clientID: String
    public var redirectURI: String
    /// The PKCE S256 challenge the code was issued under.
    public var codeChallenge: String
    public var createdAt: Date
    public var expiresAt: Date
    public var usedAt: Date?
}

/// A refresh token, stored by digest; used once, then replaced by a new one in the same grant.
public struct RefreshToken: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "oauth_refresh_token"

    public var digest: Data
    public var grantID: String
    public var createdAt: Date
    public var expiresAt: Date
    public var usedAt: Date?
}

/// A login that still waits for the user's consent: who logged in and the authorization request they are
/// consenting to, stored by the digest of the ticket the consent form carries.
public struct ConsentTicket: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "oauth_consent"

    public var digest: Data
    public var subject: String
    /// The validated authorization request, serialised by the server.
    public var request: Data
    public var expiresAt: Date
}
