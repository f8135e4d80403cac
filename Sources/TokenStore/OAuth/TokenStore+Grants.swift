import Foundation
import GRDB

/// What the store found when a code was presented at the token endpoint.
public enum CodeRedemption: Sendable, Equatable {
    /// First use: the code is now spent; the caller still checks client, redirect URI and PKCE.
    case redeemed(AuthorizationCode, OAuthGrant)
    /// The code was used before: its grant has been revoked with everything issued from it (RFC 6749 §4.1.2).
    case reused
    case expired
    case unknown
}

/// What the store found when a refresh token was presented.
public enum RefreshOutcome: Sendable, Equatable {
    /// The token was spent and replaced by `newToken` in the same grant.
    case rotated(grant: OAuthGrant, newToken: String)
    /// An already-used token came back: the whole family has been revoked.
    case reused
    /// Unknown, expired, revoked, or issued to another client.
    case invalid
}

extension TokenStore {
    /// Records a consented authorization and returns the single-use code for it.
    public func createAuthorization(
        clientID: String, subject: String, scope: [String], resource: String, redirectURI: String, codeChallenge: String,
        codeLifetime: TimeInterval, grantLifetime: TimeInterval, now: Date = Date()
    ) throws -> String {
        let code = OpaqueToken.generate(prefix: OpaqueTokenPrefix.code)
        try write { db in
            // Spent codes are kept a day so that a late replay still revokes its grant; then they go.
            try AuthorizationCode.filter(Column("expiresAt") < now.addingTimeInterval(-86400)).deleteAll(db)
            let grant = OAuthGrant(
                id: RecordID.make(prefix: "gr_"), clientID: clientID, subject: subject, scope: scope.joined(separator: " "),
                resource: resource, createdAt: now, expiresAt: now.addingTimeInterval(grantLifetime), revokedAt: nil)
            try grant.insert(db)
            try AuthorizationCode(
                digest: code.digest, grantID: grant.id, clientID: clientID, redirectURI: redirectURI, codeChallenge: codeChallenge,
                createdAt: now, expiresAt: now.addingTimeInterval(codeLifetime), usedAt: nil
            ).insert(db)
        }
        return code.plaintext
    }

    /// Spends a code. A second presentation revokes its grant, so tokens from the first use stop working too.
    public func redeemCode(_ plaintext: String, now: Date = Date()) throws -> CodeRedemption {
        try write { db in
            guard var code = try AuthorizationCode.fetchOne(db, key: OpaqueToken.digest(of: plaintext)) else { return .unknown }
            guard code.usedAt == nil else {
                try Self.revokeGrant(id: code.grantID, now: now, db: db)
                return .reused
            }
            code.usedAt = now
            try code.update(db)
            guard now < code.expiresAt else { return .expired }
            guard let grant = try OAuthGrant.fetchOne(db, key: code.grantID), grant.revokedAt == nil else { return .unknown }
            return .redeemed(code, grant)
        }
    }

    /// Issues a refresh token in `grantID`'s family, living until the grant expires.
    public func issueRefreshToken(grantID: String, now: Date = Date()) throws -> String {
        let token = OpaqueToken.generate(prefix: OpaqueTokenPrefix.refreshToken)
        try write { db in
            guard let grant = try OAuthGrant.fetchOne(db, key: grantID) else { throw TokenStoreError.invalidValue("no grant \(grantID)") }
            try RefreshToken(digest: token.digest, grantID: grantID, createdAt: now, expiresAt: grant.expiresAt, usedAt: nil).insert(db)
        }
        return token.plaintext
    }

    /// Spends a refresh token presented by `clientID` and issues its successor. Reuse of a spent token revokes the
    /// family (OAuth 2.1 §4.3.1: the legitimate client and an attacker cannot be told apart).
    public func rotateRefreshToken(_ plaintext: String, clientID: String, now: Date = Date()) throws -> RefreshOutcome {
        try write { db in
            guard var token = try RefreshToken.fetchOne(db, key: OpaqueToken.digest(of: plaintext)),
                let grant = try OAuthGrant.fetchOne(db, key: token.grantID), grant.clientID == clientID
            else { return .invalid }
            guard token.usedAt == nil else {
                try Self.revokeGrant(id: grant.id, now: now, db: db)
                return .reused
            }
            guard grant.revokedAt == nil, now < token.expiresAt, try Self.subjectIsEnabled(grant.subject, db: db) else { return .invalid }
            token.usedAt = now
            try token.update(db)
            let next = OpaqueToken.generate(prefix: OpaqueTokenPrefix.refreshToken)
            try RefreshToken(digest: next.digest, grantID: grant.id, createdAt: now, expiresAt: grant.expiresAt, usedAt: nil).insert(db)
            return .rotated(grant: grant, newToken: next.plaintext)
        }
    }

    /// A grant for one client-credentials token (subject = the client), so the token can be revoked like any other.
    public func createClientGrant(clientID: String, scope: [String], resource: String, lifetime: TimeInterval, now: Date = Date()) throws -> OAuthGrant {
        let grant = OAuthGrant(
            id: RecordID.make(prefix: "gr_"), clientID: clientID, subject: clientID, scope: scope.joined(separator: " "),
            resource: resource, createdAt: now, expiresAt: now.addingTimeInterval(lifetime), revokedAt: nil)
        try write { db in try grant.insert(db) }
        return grant
    }

    public func grant(id: String) throws -> OAuthGrant? {
        try database.read { db in try OAuthGrant.fetchOne(db, key: id) }
    }

    /// The grant of a refresh token, whether or not the token was already used.
    public func grant(ofRefreshToken plaintext: String) throws -> OAuthGrant? {
        try database.read { db in
            guard let token = try RefreshToken.fetchOne(db, key: OpaqueToken.digest(of: plaintext)) else { return nil }
            return try OAuthGrant.fetchOne(db, key: token.grantID)
        }
    }

    /// Whether a refresh token exists, is unused and unexpired (its grant is checked separately).
    public func refreshTokenIsUnused(_ plaintext: String, now: Date = Date()) throws -> Bool {
        try database.read { db in
            guard let token = try RefreshToken.fetchOne(db, key: OpaqueToken.digest(of: plaintext)) else { return false }
            return token.usedAt == nil && now < token.expiresAt
        }
    }

    /// Whether tokens of this grant may still be used: not revoked, its client not revoked, its subject not a
    /// disabled user. Checked on every request that presents a built-in access token.
    public func grantIsActive(id: String) async throws -> Bool {
        try await database.read { db in
            guard let grant = try OAuthGrant.fetchOne(db, key: id), grant.revokedAt == nil else { return false }
            guard let client = try OAuthClient.fetchOne(db, key: grant.clientID), client.revokedAt == nil else { return false }
            return try Self.subjectIsEnabled(grant.subject, db: db)
        }
    }

    public func revokeGrant(id: String, now: Date = Date()) throws {
        try write { db in try Self.revokeGrant(id: id, now: now, db: db) }
    }

    /// Revokes every grant of a subject; returns how many were still active.
    @discardableResult
    public func revokeGrants(subject: String, now: Date = Date()) throws -> Int {
        try write { db in
            try OAuthGrant.filter(Column("subject") == subject && Column("revokedAt") == nil).updateAll(db, Column("revokedAt").set(to: now))
        }
    }

    /// Stores a login waiting for consent; returns the ticket the consent form carries.
    public func createConsentTicket(subject: String, request: Data, lifetime: TimeInterval, now: Date = Date()) throws -> String {
        let ticket = OpaqueToken.generate(prefix: OpaqueTokenPrefix.consentTicket)
        try write { db in
            try ConsentTicket.filter(Column("expiresAt") < now).deleteAll(db)
            try ConsentTicket(digest: ticket.digest, subject: subject, request: request, expiresAt: now.addingTimeInterval(lifetime)).insert(db)
        }
        return ticket.plaintext
    }

    /// Takes a consent ticket (single use): the ticket's record, or nil when unknown or expired.
    public func takeConsentTicket(_ plaintext: String, now: Date = Date()) throws -> ConsentTicket? {
        try write { db in
            guard let ticket = try ConsentTicket.fetchOne(db, key: OpaqueToken.digest(of: plaintext)) else { return nil }
            try ticket.delete(db)
            return now < ticket.expiresAt ? ticket : nil
        }
    }

    static func revokeGrant(id: String, now: Date, db: Database) throws {
        try OAuthGrant.filter(Column("id") == id && Column("revokedAt") == nil).updateAll(db, Column("revokedAt").set(to: now))
    }

    /// Subjects that are not users (API-key logins, client-credentials clients) are governed by their own records.
    static func subjectIsEnabled(_ subject: String, db: Database) throws -> Bool {
        try User.filter(Column("username") == subject && Column("disabled") == true).fetchCount(db) == 0
    }
}
