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
    ///
    /// - Parameters:
    ///   - apiKeyID: the key the subject signed in with, if any. The grant then ends no later than the key (a key
    ///     that is no longer usable is refused with `invalidValue`) and is checked against it at every use.
    ///   - groups: the signed-in user's groups, carried in the grant's access tokens.
    public func createAuthorization(
        clientID: String, subject: String, scope: [String], resource: String, redirectURI: String, codeChallenge: String,
        codeLifetime: TimeInterval, grantLifetime: TimeInterval, apiKeyID: String? = nil, groups: [String] = [], now: Date = Date()
    ) throws -> String {
        let code = OpaqueToken.generate(prefix: OpaqueTokenPrefix.code)
        try write { db in
            // Spent codes are kept a day so that a late replay still revokes its grant; then they go.
            try AuthorizationCode.filter(Column("expiresAt") < now.addingTimeInterval(-86400)).deleteAll(db)
            var expiresAt = now.addingTimeInterval(grantLifetime)
            if let apiKeyID {
                guard let key = try APIKey.fetchOne(db, key: apiKeyID), key.unusableReason(at: now) == nil else {
                    throw TokenStoreError.invalidValue("the API key used to sign in is no longer valid")
                }
                if let keyEnd = key.expiresAt { expiresAt = min(expiresAt, keyEnd) }
            }
            let grant = OAuthGrant(
                id: RecordID.make(prefix: "gr_"), clientID: clientID, subject: subject, scope: scope.joined(separator: " "),
                resource: resource, createdAt: now, expiresAt: expiresAt, revokedAt: nil, apiKeyID: apiKeyID, groups: groups.joined(separator: " "))
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
            guard let found = try OAuthGrant.fetchOne(db, key: code.grantID), let grant = try Self.usableGrant(found, now: now, db: db) else {
                return .unknown
            }
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
            guard now < token.expiresAt, let usable = try Self.usableGrant(grant, now: now, db: db) else { return .invalid }
            token.usedAt = now
            try token.update(db)
            let next = OpaqueToken.generate(prefix: OpaqueTokenPrefix.refreshToken)
            try RefreshToken(digest: next.digest, grantID: usable.id, createdAt: now, expiresAt: usable.expiresAt, usedAt: nil).insert(db)
            return .rotated(grant: usable, newToken: next.plaintext)
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

    /// Whether tokens of this grant may still be used at `now`: not revoked, its client not revoked, its subject
    /// not a disabled user, and the API key it was signed in with (if any) neither revoked nor expired.
    public func grantIsActive(id: String, now: Date = Date()) async throws -> Bool {
        try await grantStatus(id: id, now: now).isActive(at: now)
    }

    /// What `/auth` needs about a grant on every request that presents a built-in access token (cached by the
    /// caller until the store changes): whether it is active, until when, and on which route only.
    public func grantStatus(id: String, now: Date = Date()) async throws -> GrantStatus {
        try await database.read { db in
            guard let grant = try OAuthGrant.fetchOne(db, key: id) else { return .inactive }
            return try Self.status(of: grant, now: now, db: db)
        }
    }

    public func revokeGrant(id: String, now: Date = Date()) throws {
        try write { db in try Self.revokeGrant(id: id, now: now, db: db) }
    }

    /// Revokes every grant of a subject; returns how many were still active.
    @discardableResult
    public func revokeGrants(subject: String, now: Date = Date()) throws -> Int {
        try write { db in try Self.revokeGrants(subject: subject, now: now, db: db) }
    }

    @discardableResult
    static func revokeGrants(subject: String, now: Date, db: Database) throws -> Int {
        try OAuthGrant.filter(Column("subject") == subject && Column("revokedAt") == nil).updateAll(db, Column("revokedAt").set(to: now))
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

    /// Takes a consent ticket (single use): the ticket's record, or nil when unknown, expired or not `accepted`.
    ///
    /// A ticket that `accepted` refuses (e.g. sent with another browser's CSRF token) stays, so whoever learns a
    /// ticket cannot spoil the sign-in it belongs to; the check and the removal are one transaction.
    public func takeConsentTicket(
        _ plaintext: String, now: Date = Date(), accepted: (ConsentTicket) -> Bool = { _ in true }
    ) throws -> ConsentTicket? {
        try write { db in
            guard let ticket = try ConsentTicket.fetchOne(db, key: OpaqueToken.digest(of: plaintext)) else { return nil }
            guard now < ticket.expiresAt else {
                try ticket.delete(db)
                return nil
            }
            guard accepted(ticket) else { return nil }
            try ticket.delete(db)
            return ticket
        }
    }

    /// The grant of an authorization code, whether or not the code was used; nothing is spent.
    public func grant(ofCode plaintext: String) throws -> (code: AuthorizationCode, grant: OAuthGrant)? {
        try database.read { db in
            guard let code = try AuthorizationCode.fetchOne(db, key: OpaqueToken.digest(of: plaintext)),
                let grant = try OAuthGrant.fetchOne(db, key: code.grantID)
            else { return nil }
            return (code, grant)
        }
    }

    static func status(of grant: OAuthGrant, now: Date, db: Database) throws -> GrantStatus {
        guard grant.revokedAt == nil else { return .inactive }
        guard let client = try OAuthClient.fetchOne(db, key: grant.clientID), client.revokedAt == nil else { return .inactive }
        guard try subjectIsEnabled(grant.subject, db: db) else { return .inactive }
        guard let keyID = grant.apiKeyID else { return .active(until: nil, route: nil) }
        // A key signed in with is never deleted; a missing one ends the grant all the same (fail closed).
        guard let key = try APIKey.fetchOne(db, key: keyID), key.unusableReason(at: now) == nil else { return .inactive }
        return .active(until: key.expiresAt, route: key.route)
    }

    /// The grant if its tokens may still be used at `now`, with its end brought forward to its key's (which
    /// `rotate-key --overlap` may have moved since the sign-in), so nothing issued from it outlives the key.
    static func usableGrant(_ grant: OAuthGrant, now: Date, db: Database) throws -> OAuthGrant? {
        guard case .active(let until, _) = try status(of: grant, now: now, db: db) else { return nil }
        var grant = grant
        if let until, until < grant.expiresAt {
            grant.expiresAt = until
            try grant.update(db)
        }
        return grant
    }

    static func revokeGrant(id: String, now: Date, db: Database) throws {
        try OAuthGrant.filter(Column("id") == id && Column("revokedAt") == nil).updateAll(db, Column("revokedAt").set(to: now))
    }

    /// Subjects that are not users (API-key logins, client-credentials clients) are governed by their own records.
    static func subjectIsEnabled(_ subject: String, db: Database) throws -> Bool {
        try User.filter(Column("username") == subject && Column("disabled") == true).fetchCount(db) == 0
    }
}
