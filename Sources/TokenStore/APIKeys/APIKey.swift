import Foundation
import GRDB

/// A stored API key: everything about it except the secret, of which only the SHA-256 digest is kept.
public struct APIKey: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "api_key"

    public var id: String
    public var digest: Data
    /// The first characters of the secret, shown in listings so an operator can tell keys apart.
    public var displayPrefix: String
    public var name: String
    public var subject: String
    /// Space-separated scopes, as in OAuth.
    public var scopes: String
    /// The only route name this key may be used on, or nil for any route.
    public var route: String?
    public var createdAt: Date
    public var expiresAt: Date?
    public var revokedAt: Date?
    public var lastUsedAt: Date?
    /// The id of the key this one replaced by `rotate-key`, if any.
    public var rotatedFrom: String?

    public var scopeList: [String] { scopes.split(separator: " ").map(String.init) }

    /// Why a key cannot be used at `date`, or nil when it can.
    public func unusableReason(at date: Date) -> UnusableReason? {
        if revokedAt != nil { return .revoked }
        if let expiresAt, expiresAt <= date { return .expired }
        return nil
    }

    /// Internal reasons a known key is refused; never shown to the client, which gets one answer for all.
    public enum UnusableReason: String, Sendable {
        case revoked, expired
    }
}
