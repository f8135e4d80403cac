import Foundation
import GRDB

extension TokenStore {
    /// Stores a dynamically registered client; confidential clients get a secret, returned here once.
    public func registerClient(_ registration: ClientRegistration, now: Date = Date()) throws -> (client: OAuthClient, secret: String?) {
        let secret = registration.authMethod == "none" ? nil : OpaqueToken.generate(prefix: OpaqueTokenPrefix.clientSecret)
        let client = OAuthClient(
            id: RecordID.make(prefix: "cli_"), secretDigest: secret?.digest, name: registration.name,
            redirectURIs: registration.redirectURIs, grantTypes: registration.grantTypes, authMethod: registration.authMethod,
            scope: registration.scope, source: .registered, createdAt: now, refreshedAt: now, revokedAt: nil)
        try write { db in try client.insert(db) }
        return (client, secret?.plaintext)
    }

    /// Stores a client an operator made (`authctl clients add`); its secret is returned here once and stored only
    /// as a digest. Machine clients authenticate with HTTP Basic (or the secret in the form body).
    public func addMachineClient(_ request: MachineClientRequest, now: Date = Date()) throws -> (client: OAuthClient, secret: String) {
        let secret = OpaqueToken.generate(prefix: OpaqueTokenPrefix.clientSecret)
        let client = OAuthClient(
            id: RecordID.make(prefix: "cli_"), secretDigest: secret.digest, name: request.name, redirectURIs: [],
            grantTypes: request.grantTypes, authMethod: "client_secret_basic",
            scope: request.scopes.isEmpty ? nil : request.scopes.joined(separator: " "), source: .operator, createdAt: now,
            refreshedAt: now, revokedAt: nil, subject: request.subject, resources: request.resources, mayIntrospect: request.mayIntrospect)
        try write { db in try client.insert(db) }
        return (client, secret.plaintext)
    }

    /// A grant for one client-credentials token of a machine client: its operator-chosen subject, revocable like
    /// any other grant (revoking the client revokes it too).
    public func createMachineGrant(client: OAuthClient, scope: [String], resource: String, lifetime: TimeInterval, now: Date = Date()) throws -> OAuthGrant {
        guard client.isMachineClient, let subject = client.subject else { throw TokenStoreError.invalidValue("\(client.id) is not a machine client") }
        let grant = OAuthGrant(
            id: RecordID.make(prefix: "gr_"), clientID: client.id, subject: subject, scope: scope.joined(separator: " "),
            resource: resource, createdAt: now, expiresAt: now.addingTimeInterval(lifetime), revokedAt: nil)
        try write { db in try grant.insert(db) }
        return grant
    }

    /// Stores (or refreshes) a client described by a fetched metadata document, keeping a revocation in force.
    @discardableResult
    public func saveMetadataDocumentClient(_ client: OAuthClient) throws -> OAuthClient {
        try write { db in
            var saved = client
            if let existing = try OAuthClient.fetchOne(db, key: client.id) {
                saved.createdAt = existing.createdAt
                saved.revokedAt = existing.revokedAt
            }
            try saved.save(db)
            return saved
        }
    }

    public func client(id: String) throws -> OAuthClient? {
        try database.read { db in try OAuthClient.fetchOne(db, key: id) }
    }

    /// Every client, newest first.
    public func listClients() throws -> [OAuthClient] {
        try database.read { db in try OAuthClient.order(Column("createdAt").desc, Column("id")).fetchAll(db) }
    }

    /// The client if it exists, is not revoked, and `secret` is its secret (public clients: no secret given).
    /// Secrets are compared by digest in constant time.
    public func authenticateClient(id: String, secret: String?) throws -> OAuthClient? {
        guard let client = try client(id: id), client.revokedAt == nil else { return nil }
        switch (client.secretDigest, secret) {
        case (nil, nil): return client
        case (let stored?, let given?): return constantTimeEquals(stored, OpaqueToken.digest(of: given)) ? client : nil
        default: return nil
        }
    }

    /// Revokes a client and every grant it holds: it can no longer authorize, and its tokens stop working.
    @discardableResult
    public func revokeClient(id: String, now: Date = Date()) throws -> OAuthClient {
        try write { db in
            guard var client = try OAuthClient.fetchOne(db, key: id) else {
                throw TokenStoreError.clientNotFound(id: id)
            }
            guard client.revokedAt == nil else { throw TokenStoreError.clientAlreadyRevoked(id: id) }
            client.revokedAt = now
            try client.update(db)
            try OAuthGrant.filter(Column("clientID") == id && Column("revokedAt") == nil).updateAll(db, Column("revokedAt").set(to: now))
            return client
        }
    }
}
