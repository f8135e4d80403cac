import Foundation
import GRDB

/// An OAuth client known to the built-in authorization server: registered dynamically (RFC 7591), described by a
/// fetched Client ID Metadata Document, or made by an operator with `authctl clients add` (machine clients).
public struct OAuthClient: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "oauth_client"

    /// How the server came to know the client.
    public enum Source: String, Codable, Sendable {
        case registered
        case metadataDocument = "metadata_document"
        /// Made with `authctl clients add`: the only clients that may use `client_credentials` or introspect
        /// tokens of other clients, because an operator vouched for them.
        case `operator`
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
    /// The subject of a machine client's `client_credentials` tokens, chosen by the operator; nil for other clients.
    public var subject: String?
    /// The resources a machine client's tokens may be for (their `aud`); empty for other clients.
    public var resources: [String]
    /// Whether `/oauth/introspect` answers this client about tokens issued to other clients (set by `authctl`).
    public var mayIntrospect: Bool

    public init(
        id: String, secretDigest: Data?, name: String, redirectURIs: [String], grantTypes: [String], authMethod: String, scope: String?,
        source: Source, createdAt: Date, refreshedAt: Date, revokedAt: Date?, subject: String? = nil, resources: [String] = [],
        mayIntrospect: Bool = false
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
        self.subject = subject
        self.resources = resources
        self.mayIntrospect = mayIntrospect
    }

    public var isConfidential: Bool { secretDigest != nil }

    public func allows(grantType: String) -> Bool { grantTypes.contains(grantType) }

    /// A client an operator made for `client_credentials`: only these get tokens without a user's consent.
    public var isMachineClient: Bool { source == .operator && isConfidential && subject != nil && allows(grantType: "client_credentials") }
}

/// What an operator asks for with `authctl clients add`, after validation.
public struct MachineClientRequest: Sendable {
    public var name: String
    /// `["client_credentials"]`, or empty for a client that only introspects.
    public var grantTypes: [String]
    public var subject: String?
    public var scopes: [String]
    public var resources: [String]
    public var mayIntrospect: Bool

    public init(name: String, grantTypes: [String], subject: String?, scopes: [String], resources: [String], mayIntrospect: Bool) {
        self.name = name
        self.grantTypes = grantTypes
        self.subject = subject
        self.scopes = scopes
        self.resources = resources
        self.mayIntrospect = mayIntrospect
    }
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
