import Foundation
import GRDB
import HummingbirdBcrypt

/// A person who can log in to the built-in authorization server. Only a bcrypt hash of the password is kept.
public struct User: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "user"

    public var id: String
    public var username: String
    public var passwordHash: String
    public var disabled: Bool
    public var createdAt: Date
    public var updatedAt: Date
    /// Space-separated scopes a sign-in may be granted; none when empty (fail closed).
    public var scopes: String = ""
    /// Space-separated groups, carried in the user's access tokens (`groups` claim) for `require.groups`.
    public var groups: String = ""

    public var scopeList: [String] { scopes.split(separator: " ").map(String.init) }
    public var groupList: [String] { groups.split(separator: " ").map(String.init) }

    /// Checks a password against the stored hash (slow on purpose).
    public func verifyPassword(_ password: String) -> Bool {
        Bcrypt.verify(password, hash: passwordHash)
    }
}

/// Rules for user names and passwords, shared by the store and the CLI so both say the same thing.
public enum Credentials {
    public static let minimumPasswordLength = 10
    /// bcrypt reads at most 72 bytes; longer passwords would be silently truncated.
    public static let maximumPasswordBytes = 72
    static let bcryptCost: UInt8 = 12

    /// Why a user name is unacceptable, or nil.
    public static func usernameProblem(_ username: String) -> String? {
        guard (1...64).contains(username.count) else { return "user name must be 1 to 64 characters" }
        guard username.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._@-".contains($0)) }) else {
            return "user name may contain letters, digits, '.', '_', '@' and '-' only"
        }
        return nil
    }

    /// Why a list of scopes or groups is unacceptable, or nil: each a non-empty name of printable ASCII without
    /// spaces, quotes, backslashes or commas (they are stored space-separated and sent in JWT claims).
    public static func accessNamesProblem(_ names: [String], what: String) -> String? {
        for name in names where name.isEmpty || !name.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) && !"\"\\,".unicodeScalars.contains($0) }) {
            return "\(what) must be comma-separated names of printable ASCII without spaces, quotes or backslashes, not '\(name)'"
        }
        return nil
    }

    /// Why a password is unacceptable, or nil.
    public static func passwordProblem(_ password: String) -> String? {
        if password.count < minimumPasswordLength { return "password must be at least \(minimumPasswordLength) characters" }
        if password.utf8.count > maximumPasswordBytes { return "password must be at most \(maximumPasswordBytes) bytes" }
        return nil
    }
}
