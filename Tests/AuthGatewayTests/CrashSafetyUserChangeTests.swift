import Foundation
import GRDB
import Testing
import TokenStore

/// Issue 12 item 5 (crash safety): a user change that must end the user's OAuth grants (`user set` taking a scope or
/// group away, `user disable`) is written in the same transaction as the revocation. Written in two, a process killed
/// between them left a narrowed or disabled user whose old grants were still active (and `user enable` would have
/// revived a disabled user's tokens). The kill is simulated by a trigger that makes the revocation fail.
@Suite("Crash safety: a user change and the grant revocations it implies are one transaction")
struct CrashSafetyUserChangeTests {
    static let resource = "https://mcp.example.com/ffmpeg"
    static let redirect = "http://127.0.0.1:33418/callback"
    static let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

    /// A store with user alice (scopes ffmpeg and memory, group ops) holding one active grant.
    func storeWithGrant() throws -> (TokenStore, OAuthGrant) {
        let store = try TokenStore(
            path: FileManager.default.temporaryDirectory.appendingPathComponent("crash-\(UUID().uuidString)/s.sqlite").path)
        try store.addUser(username: "alice", password: "correct horse battery", scopes: ["ffmpeg", "memory"], groups: ["ops"])
        let client = try store.registerClient(ClientRegistration(
            name: "claude", redirectURIs: [Self.redirect], grantTypes: ["authorization_code", "refresh_token"], authMethod: "none",
            scope: nil)).client
        let code = try store.createAuthorization(
            clientID: client.id, subject: "alice", scope: ["ffmpeg"], resource: Self.resource, redirectURI: Self.redirect,
            codeChallenge: Self.challenge, codeLifetime: 60, grantLifetime: 86400, groups: ["ops"])
        guard case .redeemed(_, let grant) = try store.redeemCode(code) else { throw Unexpected() }
        return (store, grant)
    }

    struct Unexpected: Error {}

    /// From now on every revocation of a grant fails, as if the process died just before writing it.
    func killBeforeGrantRevocation(_ store: TokenStore) throws {
        let queue = try DatabaseQueue(path: store.path)
        try queue.write { db in
            try db.execute(sql: """
                CREATE TRIGGER crash_before_revocation BEFORE UPDATE OF revokedAt ON oauth_grant
                BEGIN SELECT RAISE(ABORT, 'simulated crash before the grant revocation'); END
                """)
        }
    }

    @Test("user set that takes a scope away is written with the revocation of the user's grants, or not at all")
    func narrowingIsOneTransaction() async throws {
        let (store, grant) = try storeWithGrant()
        try killBeforeGrantRevocation(store)
        #expect(throws: (any Error).self) { try store.setAccess(username: "alice", scopes: ["memory"], groups: nil) }
        #expect(try store.user(named: "alice")?.scopeList == ["ffmpeg", "memory"])
        #expect(try await store.grantIsActive(id: grant.id))
    }

    @Test("user set that takes a group away is written with the revocation of the user's grants, or not at all")
    func narrowingGroupsIsOneTransaction() async throws {
        let (store, _) = try storeWithGrant()
        try killBeforeGrantRevocation(store)
        #expect(throws: (any Error).self) { try store.setAccess(username: "alice", scopes: nil, groups: []) }
        #expect(try store.user(named: "alice")?.groupList == ["ops"])
    }

    @Test("user disable is written with the revocation of the user's grants, or not at all")
    func disablingIsOneTransaction() async throws {
        let (store, grant) = try storeWithGrant()
        try killBeforeGrantRevocation(store)
        #expect(throws: (any Error).self) { try store.setDisabled(username: "alice", true) }
        #expect(try store.user(named: "alice")?.disabled == false)
        #expect(try await store.grantIsActive(id: grant.id))
    }

    @Test("user disable then enable leaves the grants revoked: re-enabling never revives old tokens")
    func enableDoesNotReviveGrants() async throws {
        let (store, grant) = try storeWithGrant()
        try store.setDisabled(username: "alice", true)
        try store.setDisabled(username: "alice", false)
        #expect(try store.grant(id: grant.id)?.revokedAt != nil)
        #expect(try await store.grantIsActive(id: grant.id) == false)
    }
}
