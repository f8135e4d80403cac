import Foundation
import GRDB
import Testing
@testable import TokenStore

/// Issue 11 finding 1: tokens a self-registered client minted with `client_credentials` before the fix end when the
/// store is upgraded.
@Suite("Finding 1: upgrading the store ends self-minted client-credentials grants")
struct Finding1LegacyGrantTests {
    @Test("finding 1: the migration revokes grants whose subject is their own client, and keeps user grants")
    func legacyGrantsRevoked() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("legacy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = directory.appendingPathComponent("store.sqlite").path
        do {
            let queue = try DatabaseQueue(path: path)
            try StoreMigrations.migrator.migrate(queue, upTo: "v3-oauth")
            try queue.write { db in
                try db.execute(sql: """
                    INSERT INTO oauth_client (id, secretDigest, name, redirectURIs, grantTypes, authMethod, source, createdAt, refreshedAt)
                    VALUES ('cli_minter', x'00', 'minter', '[]', '["client_credentials"]', 'client_secret_basic', 'registered', '2026-01-01 00:00:00.000', '2026-01-01 00:00:00.000')
                    """)
                for (id, subject) in [("gr_self", "cli_minter"), ("gr_alice", "alice")] {
                    try db.execute(sql: """
                        INSERT INTO oauth_grant (id, clientID, subject, scope, resource, createdAt, expiresAt)
                        VALUES (?, 'cli_minter', ?, 'ffmpeg', 'https://mcp.example.com/ffmpeg', '2026-01-01 00:00:00.000', '2099-01-01 00:00:00.000')
                        """, arguments: [id, subject])
                }
            }
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        let store = try TokenStore(path: path)
        #expect(try store.grant(id: "gr_self")?.revokedAt != nil)
        #expect(try store.grant(id: "gr_alice")?.revokedAt == nil)
        #expect(try store.client(id: "cli_minter")?.isMachineClient == false)
    }
}
