import Crypto
import Foundation
import GRDB

/// A random key the gateway keys its own MACs with (e.g. the CSRF tokens of the sign-in forms), made on first use
/// and kept in the store so that every replica and every restart agrees on it. Private like the signing keys.
struct GatewaySecret: Codable, Sendable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "gateway_secret"

    var name: String
    var value: Data
    var createdAt: Date
}

extension TokenStore {
    /// The 256-bit secret called `name`, generated on first use.
    public func gatewaySecret(named name: String, now: Date = Date()) throws -> SymmetricKey {
        // Read first: a write would move the change counter and empty the decision caches on every page view.
        if let stored = try database.read({ db in try GatewaySecret.fetchOne(db, key: name) }) { return SymmetricKey(data: stored.value) }
        let value = try write { db in
            if let raced = try GatewaySecret.fetchOne(db, key: name) { return raced.value }
            let secret = GatewaySecret(name: name, value: SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }, createdAt: now)
            try secret.insert(db)
            return secret.value
        }
        return SymmetricKey(data: value)
    }
}
