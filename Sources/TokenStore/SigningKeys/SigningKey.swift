import Crypto
import Foundation
import GRDB

/// An ES256 key the built-in authorization server signs access tokens with. The newest unretired key signs; the
/// previous one stays published so tokens it signed keep verifying until they expire.
public struct SigningKey: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "signing_key"

    public var kid: String
    public var algorithm: String
    /// The private key; it never leaves the store except to sign.
    public var privateKeyPEM: String
    public var createdAt: Date
    public var retiredAt: Date?

    public var privateKey: P256.Signing.PrivateKey {
        get throws { try P256.Signing.PrivateKey(pemRepresentation: privateKeyPEM) }
    }

    /// The public half as a JWK (RFC 7517), with `kid`, `alg` and `use` set.
    public var publicJWK: [String: String] {
        get throws {
            let point = try privateKey.publicKey.x963Representation
            return [
                "kty": "EC", "crv": "P-256", "alg": algorithm, "use": "sig", "kid": kid,
                "x": Self.base64url(point[1..<33]), "y": Self.base64url(point[33..<65]),
            ]
        }
    }

    static func generate(now: Date) -> SigningKey {
        SigningKey(
            kid: RecordID.make(prefix: "sig_"), algorithm: "ES256", privateKeyPEM: P256.Signing.PrivateKey().pemRepresentation,
            createdAt: now, retiredAt: nil)
    }

    static func base64url(_ bytes: some DataProtocol) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

extension TokenStore {
    /// The current signing key, generating the first one if the store has none.
    public func currentSigningKey(now: Date = Date()) throws -> SigningKey {
        // Read first: every sign-in and refresh issues a token, and a write transaction each time would take the
        // store's write lock and expire the decision caches' change probe for nothing once the key exists.
        if let current = try database.read(Self.unretiredSigningKey) { return current }
        return try write { db in
            if let current = try Self.unretiredSigningKey(db) { return current }
            let key = SigningKey.generate(now: now)
            try key.insert(db)
            return key
        }
    }

    private static func unretiredSigningKey(_ db: Database) throws -> SigningKey? {
        try SigningKey.filter(Column("retiredAt") == nil).order(Column.rowID.desc).fetchOne(db)
    }

    /// Makes a new current key and retires the previous current one (which stays published).
    @discardableResult
    public func rotateSigningKey(now: Date = Date()) throws -> SigningKey {
        try write { db in
            try db.execute(sql: "UPDATE signing_key SET retiredAt = ? WHERE retiredAt IS NULL", arguments: [now])
            let key = SigningKey.generate(now: now)
            try key.insert(db)
            return key
        }
    }

    /// Every signing key, newest first (insertion order: timestamps can tie within a millisecond).
    public func listSigningKeys() throws -> [SigningKey] {
        try database.read { db in try SigningKey.order(Column.rowID.desc).fetchAll(db) }
    }

    /// The keys to publish in the JWKS: the current key and the most recently retired one.
    public func publishedSigningKeys() throws -> [SigningKey] {
        Array(try listSigningKeys().prefix(2))
    }
}
