import Foundation
import GRDB

/// Persistent state of the gateway (API keys today; users, OAuth clients and signing keys next) in one SQLite file.
///
/// The file is opened in WAL mode so that `authctl` can write while a running gateway reads: a key revoked by the CLI
/// is refused by the gateway on its next lookup.
public final class TokenStore: Sendable {
    let database: DatabasePool
    /// A connection of its own whose `PRAGMA data_version` moves whenever any other connection, in this process or
    /// another (`authctl`), commits a change: the cheap signal that cached lookups may be stale.
    private let changeProbe: StoreChangeProbe

    /// How long after a change made by another process (`authctl`) decisions may still use lookups cached before it.
    /// Changes made through this store are seen by the next decision.
    public static var externalChangeDelay: Duration { StoreChangeProbe.reuseInterval }

    /// The path of the SQLite file behind this store.
    public let path: String

    /// Opens (creating if needed) the store at `path` and applies every pending migration.
    ///
    /// A missing file is created 0600 (its directory 0700); an existing one that group or others may access is
    /// refused, with the `chmod` that fixes it in the error.
    public init(path: String) throws {
        try StoreFilePermissions.prepare(path: path)
        try StoreFilePermissions.check(path: path)
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        // Few readers, each with a small page cache: lookups are single index probes, and every reader connection
        // costs memory whether used or not (RSS with a million keys stays low).
        configuration.maximumReaderCount = 2
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA cache_size = -1024")
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        do {
            self.database = try DatabasePool(path: path, configuration: configuration)
            try StoreMigrations.migrator.migrate(self.database)
            self.changeProbe = try StoreChangeProbe(path: path)
        } catch let error as DatabaseError {
            throw TokenStoreError.cannotOpen(path: path, reason: error.message ?? error.description)
        }
        self.path = path
    }

    /// A number that changes whenever the stored data changes (any connection, any process; another process's change
    /// within `externalChangeDelay`). Nanoseconds to read: callers compare it with the value their cached lookups
    /// were made under.
    public func changeCounter() throws -> Int {
        try changeProbe.read()
    }

    /// Every change goes through here, so the change counter moves for the next decision.
    func write<T>(_ updates: (Database) throws -> T) throws -> T {
        defer { changeProbe.expire() }
        return try database.write(updates)
    }

    /// Every change goes through here, so the change counter moves for the next decision.
    func write<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws -> T {
        defer { changeProbe.expire() }
        return try await database.write(updates)
    }
}

/// Errors the store reports to its callers, each with a message an operator can act on.
public enum TokenStoreError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(path: String, reason: String)
    case keyNotFound(id: String)
    case keyAlreadyRevoked(id: String)
    case userExists(username: String)
    case userNotFound(username: String)
    case clientNotFound(id: String)
    case clientAlreadyRevoked(id: String)
    case invalidValue(String)

    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason): "cannot open token store \(path): \(reason)"
        case .keyNotFound(let id): "no API key with id \(id)"
        case .keyAlreadyRevoked(let id): "API key \(id) is already revoked"
        case .userExists(let username): "user \(username) already exists"
        case .userNotFound(let username): "no user named \(username)"
        case .clientNotFound(let id): "no OAuth client with id \(id)"
        case .clientAlreadyRevoked(let id): "OAuth client \(id) is already revoked"
        case .invalidValue(let problem): problem
        }
    }
}
