import Foundation
import GRDB
import HummingbirdBcrypt

extension TokenStore {
    /// Adds a user with a bcrypt-hashed password and the scopes a sign-in may be granted (none by default) and the
    /// groups their tokens carry.
    @discardableResult
    public func addUser(username: String, password: String, scopes: [String] = [], groups: [String] = [], now: Date = Date()) throws -> User {
        if let problem = Credentials.usernameProblem(username) { throw TokenStoreError.invalidValue(problem) }
        if let problem = Credentials.passwordProblem(password) { throw TokenStoreError.invalidValue(problem) }
        if let problem = Credentials.accessNamesProblem(scopes, what: "scopes") ?? Credentials.accessNamesProblem(groups, what: "groups") {
            throw TokenStoreError.invalidValue(problem)
        }
        let hash = Bcrypt.hash(password, cost: Credentials.bcryptCost)
        return try write { db in
            guard try User.filter(Column("username") == username).fetchCount(db) == 0 else {
                throw TokenStoreError.userExists(username: username)
            }
            let user = User(
                id: RecordID.make(prefix: "usr_"), username: username, passwordHash: hash, disabled: false, createdAt: now, updatedAt: now,
                scopes: Self.joined(scopes), groups: Self.joined(groups))
            try user.insert(db)
            return user
        }
    }

    public func user(named username: String) throws -> User? {
        try database.read { db in try User.filter(Column("username") == username).fetchOne(db) }
    }

    public func listUsers() throws -> [User] {
        try database.read { db in try User.order(Column("username")).fetchAll(db) }
    }

    /// Replaces a user's password.
    @discardableResult
    public func setPassword(username: String, password: String, now: Date = Date()) throws -> User {
        if let problem = Credentials.passwordProblem(password) { throw TokenStoreError.invalidValue(problem) }
        let hash = Bcrypt.hash(password, cost: Credentials.bcryptCost)
        return try updateUser(username, now: now) { user in
            user.passwordHash = hash
            user.updatedAt = now
            return false
        }
    }

    /// Replaces a user's scopes and/or groups (nil: unchanged). Taking any away also revokes the user's OAuth grants,
    /// so tokens issued under the old ones end at once; the new ones apply from the next sign-in.
    @discardableResult
    public func setAccess(username: String, scopes: [String]?, groups: [String]?, now: Date = Date()) throws -> User {
        if let problem = scopes.flatMap({ Credentials.accessNamesProblem($0, what: "scopes") })
            ?? groups.flatMap({ Credentials.accessNamesProblem($0, what: "groups") })
        {
            throw TokenStoreError.invalidValue(problem)
        }
        return try updateUser(username, now: now) { user in
            var narrowed = false
            if let scopes {
                narrowed = narrowed || !Set(user.scopeList).isSubset(of: scopes)
                user.scopes = Self.joined(scopes)
            }
            if let groups {
                narrowed = narrowed || !Set(user.groupList).isSubset(of: groups)
                user.groups = Self.joined(groups)
            }
            user.updatedAt = now
            return narrowed
        }
    }

    /// Space-separated, each name once, in the given order.
    private static func joined(_ names: [String]) -> String {
        names.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }.joined(separator: " ")
    }

    /// Disables (or re-enables) a user; a disabled user cannot log in, and disabling revokes every OAuth grant the
    /// user holds, so refresh tokens do not outlive the account.
    @discardableResult
    public func setDisabled(username: String, _ disabled: Bool, now: Date = Date()) throws -> User {
        try updateUser(username, now: now) { user in
            user.disabled = disabled
            user.updatedAt = now
            return disabled
        }
    }

    /// The user if `password` is theirs and they are not disabled. Unknown users cost a hash too, so the answer
    /// time does not tell whether a user exists.
    public func authenticateUser(username: String, password: String) throws -> User? {
        guard let user = try user(named: username) else {
            _ = Bcrypt.verify(password, hash: Self.decoyHash)
            return nil
        }
        guard user.verifyPassword(password), !user.disabled else { return nil }
        return user
    }

    private static let decoyHash = Bcrypt.hash("decoy password for timing", cost: Credentials.bcryptCost)

    /// Applies `change` to the user; when it returns true the user's OAuth grants are revoked in the same
    /// transaction, so a process killed mid-way never leaves a narrowed or disabled user with working grants.
    private func updateUser(_ username: String, now: Date, _ change: (inout User) -> Bool) throws -> User {
        try write { db in
            guard var user = try User.filter(Column("username") == username).fetchOne(db) else {
                throw TokenStoreError.userNotFound(username: username)
            }
            let endsGrants = change(&user)
            try user.update(db)
            if endsGrants { try Self.revokeGrants(subject: username, now: now, db: db) }
            return user
        }
    }
}
