import GRDB

/// The store's schema history; migrations are append-only and never edited once shipped.
enum StoreMigrations {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-api-keys") { db in
            try db.create(table: "api_key") { t in
                t.primaryKey("id", .text)
                t.column("digest", .blob).notNull().unique()
                t.column("displayPrefix", .text).notNull()
                t.column("name", .text).notNull()
                t.column("subject", .text).notNull()
                t.column("scopes", .text).notNull()
                t.column("route", .text)
                t.column("createdAt", .datetime).notNull()
                t.column("expiresAt", .datetime)
                t.column("revokedAt", .datetime)
                t.column("lastUsedAt", .datetime)
                t.column("rotatedFrom", .text)
            }
            try db.create(index: "api_key_subject", on: "api_key", columns: ["subject"])
        }
        migrator.registerMigration("v2-users-and-signing-keys") { db in
            try db.create(table: "user") { t in
                t.primaryKey("id", .text)
                t.column("username", .text).notNull().unique()
                t.column("passwordHash", .text).notNull()
                t.column("disabled", .boolean).notNull().defaults(to: false)
                t.column("createdAt", .datetime).notNull()
                t.column("updatedAt", .datetime).notNull()
            }
            try db.create(table: "signing_key") { t in
                t.primaryKey("kid", .text)
                t.column("algorithm", .text).notNull()
                t.column("privateKeyPEM", .text).notNull()
                t.column("createdAt", .datetime).notNull()
                t.column("retiredAt", .datetime)
            }
        }
        return migrator
    }
}
