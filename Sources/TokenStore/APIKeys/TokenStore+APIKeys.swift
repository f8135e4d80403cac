import Foundation
import GRDB

/// What an operator asks for when issuing a key.
public struct APIKeyRequest: Sendable {
    public var subject: String
    public var name: String
    public var scopes: [String]
    public var route: String?
    public var expiresAt: Date?

    public init(subject: String, name: String, scopes: [String], route: String? = nil, expiresAt: Date? = nil) {
        self.subject = subject
        self.name = name
        self.scopes = scopes
        self.route = route
        self.expiresAt = expiresAt
    }
}

extension TokenStore {
    /// Creates a key and returns its record together with the plaintext, which exists nowhere else afterwards.
    public func issueKey(_ request: APIKeyRequest, now: Date = Date()) throws -> (APIKey, APIKeySecret) {
        try write { db in try Self.insertKey(request, rotatedFrom: nil, now: now, db: db) }
    }

    /// Every key, newest first.
    public func listKeys() throws -> [APIKey] {
        try database.read { db in try APIKey.order(Column("createdAt").desc, Column("id")).fetchAll(db) }
    }

    public func key(id: String) throws -> APIKey? {
        try database.read { db in try APIKey.fetchOne(db, key: id) }
    }

    /// The key whose secret hashes to `digest`, compared in constant time after the indexed lookup.
    public func findKey(digest: Data) async throws -> APIKey? {
        let found = try await database.read { db in
            try APIKey.filter(Column("digest") == digest).fetchOne(db)
        }
        guard let found, constantTimeEquals(found.digest, digest) else { return nil }
        return found
    }

    /// Revokes a key at once. Revoking an already revoked key is an error so that scripts notice typos.
    @discardableResult
    public func revokeKey(id: String, now: Date = Date()) throws -> APIKey {
        try write { db in
            guard var key = try APIKey.fetchOne(db, key: id) else { throw TokenStoreError.keyNotFound(id: id) }
            guard key.revokedAt == nil else { throw TokenStoreError.keyAlreadyRevoked(id: id) }
            key.revokedAt = now
            try key.update(db)
            return key
        }
    }

    /// Replaces a key by a new one with the same subject, name, scopes, route and expiry; the old key keeps working
    /// for `overlap` (but never longer than it would have anyway), or stops at once when `overlap` is zero.
    public func rotateKey(id: String, overlap: TimeInterval, now: Date = Date()) throws -> (new: APIKey, secret: APIKeySecret, old: APIKey) {
        try write { db in
            guard var old = try APIKey.fetchOne(db, key: id) else { throw TokenStoreError.keyNotFound(id: id) }
            guard old.revokedAt == nil else { throw TokenStoreError.keyAlreadyRevoked(id: id) }
            let request = APIKeyRequest(subject: old.subject, name: old.name, scopes: old.scopeList, route: old.route, expiresAt: old.expiresAt)
            let (new, secret) = try Self.insertKey(request, rotatedFrom: old.id, now: now, db: db)
            if overlap <= 0 {
                old.revokedAt = now
            } else {
                let end = now.addingTimeInterval(overlap)
                old.expiresAt = min(old.expiresAt ?? end, end)
            }
            try old.update(db)
            return (new, secret, old)
        }
    }

    /// Writes a batch of last-use times in one transaction; never called on the request path.
    public func recordLastUsed(_ uses: [String: Date]) async throws {
        guard !uses.isEmpty else { return }
        try await write { db in
            for (id, date) in uses {
                try db.execute(
                    sql: "UPDATE api_key SET lastUsedAt = ? WHERE id = ? AND (lastUsedAt IS NULL OR lastUsedAt < ?)",
                    arguments: [date, id, date])
            }
        }
    }

    private static func insertKey(_ request: APIKeyRequest, rotatedFrom: String?, now: Date, db: Database) throws -> (APIKey, APIKeySecret) {
        let secret = APIKeySecret.generate()
        let key = APIKey(
            id: RecordID.make(prefix: "key_"),
            digest: secret.digest,
            displayPrefix: secret.displayPrefix,
            name: request.name,
            subject: request.subject,
            scopes: request.scopes.joined(separator: " "),
            route: request.route,
            createdAt: now,
            expiresAt: request.expiresAt,
            revokedAt: nil,
            lastUsedAt: nil,
            rotatedFrom: rotatedFrom)
        try key.insert(db)
        return (key, secret)
    }
}
