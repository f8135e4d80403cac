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
        migrator.registerMigration("v3-oauth") { db in
            try db.create(table: "oauth_client") { t in
                t.primaryKey("id", .text)
                t.column("secretDigest", .blob)
                t.column("name", .text).notNull()
                t.column("redirectURIs", .text).notNull()
                t.column("grantTypes", .text).notNull()
                t.column("authMethod", .text).notNull()
                t.column("scope", .text)
                t.column("source", .text).notNull()
                t.column("createdAt", .datetime).notNull()
                t.column("refreshedAt", .datetime).notNull()
                t.column("revokedAt", .datetime)
            }
            try db.create(table: "oauth_grant") { t in
                t.primaryKey("id", .text)
                t.column("clientID", .text).notNull().indexed()
                t.column("subject", .text).notNull().indexed()
                t.column("scope", .text).notNull()
                t.column("resource", .text).notNull()
                t.column("createdAt", .datetime).notNull()
                t.column("expiresAt", .datetime).notNull()
                t.column("revokedAt", .datetime)
            }
            try db.create(table: "oauth_code") { t in
                t.primaryKey("digest", .blob)
                t.column("grantID", .text).notNull().indexed()
                t.column("clientID", .text).notNull()
                t.column("redirectURI", .text).notNull()
                t.column("codeChallenge", .text).notNull()
                t.column("createdAt", .datetime).notNull()
                t.column("expiresAt", .datetime).notNull()
                t.column("usedAt", .datetime)
            }
            try db.create(table: "oauth_refresh_token") { t in
                t.primaryKey("digest", .blob)
                t.column("grantID", .text).notNull().indexed()
                t.column("createdAt", .datetime).notNull()
                t.column("expiresAt", .datetime).notNull()
                t.column("usedAt", .datetime)
            }
            try db.create(table: "oauth_consent") { t in
                t.primaryKey("digest", .blob)
                t.column("subject", .text).notNull()
                t.column("request", .blob).notNull()
                t.column("expiresAt", .datetime).notNull()
            }
        }
        // Issue 11 finding 2: a grant obtained by signing in with an API key names the key, so it ends with it.
        migrator.registerMigration("v-issue11-grant-api-key") { db in
            try db.alter(table: "oauth_grant") { t in
                t.add(column: "apiKeyID", .text)
            }
        }
        // Issue 11 finding 1: machine clients are made by an operator (subject, resources, introspection right).
        // Client-credentials grants that self-registered clients got before (their subject is the client itself)
        // end here: nobody vouched for those clients.
        migrator.registerMigration("v-issue11-operator-clients") { db in
            try db.alter(table: "oauth_client") { t in
                t.add(column: "subject", .text)
                t.add(column: "resources", .text).notNull().defaults(to: "[]")
                t.add(column: "mayIntrospect", .boolean).notNull().defaults(to: false)
            }
            try db.execute(sql: """
                UPDATE oauth_grant SET revokedAt = CURRENT_TIMESTAMP WHERE revokedAt IS NULL AND subject = clientID
                """)
        }
        // Issue 11 finding G: secrets the gateway keys its own MACs with (the sign-in forms' CSRF tokens), shared by
        // every replica that uses the store.
        migrator.registerMigration("v-issue11-gateway-secrets") { db in
            try db.create(table: "gateway_secret") { t in
                t.primaryKey("name", .text)
                t.column("value", .blob).notNull()
                t.column("createdAt", .datetime).notNull()
            }
        }
        // Issue 11 finding H: users carry the scopes and groups an operator gave them (none until then: a sign-in
        // grants nothing the operator did not allow), and a grant keeps the groups its user had at sign-in.
        migrator.registerMigration("v-issue11-user-scopes-groups") { db in
            try db.alter(table: "user") { t in
                t.add(column: "scopes", .text).notNull().defaults(to: "")
                t.add(column: "groups", .text).notNull().defaults(to: "")
            }
            try db.alter(table: "oauth_grant") { t in
                t.add(column: "groups", .text).notNull().defaults(to: "")
            }
        }
        return migrator
    }
}
