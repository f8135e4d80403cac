import Foundation
import GRDB

/// An OAuth client known to the built-in authorization server: registered dynamically (RFC 7591) or described by a
/// fetched Client ID Metadata Document.
public struct OAuthClient: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "oauth_client"

    /// How the server came to know the client.
    public enum Source: String, Codable, Sendable {
        case registered
        case metadataDocument = "metadata_document"
    }

    /// The client_id: an opaque id for registered clients, the document URL for metadata-document clients.
    public var id: String
    /// SHA-256 of the client secret; nil for public clients.
    public var secretDigest: Data?
    public var name: String
    public var redirectURIs: [String]
    public var grantTypes: [String]
    /// `none`, `client_secret_basic` or `client_secret_post`.
    public var authMethod: String
    /// Space-separated scopes the client may ask for, or nil for any scope the resource uses.
    public var scope: String?
    public var source: Source
    public var createdAt: Date
    /// When a metadata document was last fetched; such clients are fetched again once it is too old.
    public var refreshedAt: Date
    public var revokedAt: Date?

    public init(
        id: String, secretDigest: Data?, name: String, redirectURIs: [String], grantTypes: [String], authMethod: String, scope: String?,
        source: Source, createdAt: Date, refreshedAt: Date, revokedAt: Date?
    ) {
        self.id = id
        self.secretDigest = secretDigest
        self.name = name
        self.redirectURIs = redirectURIs
        self.grantTypes = grantTypes
        self.authMethod = authMethod
        self.scope = scope
        self.source = source
        self.createdAt = createdAt
        self.refreshedAt = refreshedAt
        self.revokedAt = revokedAt
    }

    public var isConfidential: Bool { secretDigest != nil }

    public func allows(grantType: String) -> Bool { grantTypes.contains(grantType) }
}

/// What a client asks for at the registration endpoint, after validation.
public struct ClientRegistration: Sendable {
    public var name: String
    public var redirectURIs: [String]
    public var grantTypes: [String]
    public var authMethod: String
    public var scope: String?

    public init(name: String, redirectURIs: [String], grantTypes: [String], authMethod: String, scope: String?) {
        self.name = name
        self.redirectURIs = redirectURIs
        self.grantTypes = grantTypes
        self.authMethod = authMethod
        self.scope = scope
    }
}
