import Foundation
import GRDB

/// Persistent state of the gateway (API keys today; users, OAuth clients and signing keys next) in one SQLite file.
///
/// The file is opened in WAL mode so that `authctl` can write while a running gateway reads: a key revoked by the CLI
/// is refused by the gateway on its next lookup.
public final class TokenStore: Sendable {
    /// The current opening of the file at `path` (pool and change probe), reopened when the file is replaced and
    /// unavailable while it is missing: see `StoreFileWatch`.
    private let watch: StoreFileWatch

    /// The connection pool on the file now at `path`; throws while the store is unavailable (file missing or not
    /// openable), which callers turn into a 503.
    var database: DatabasePool {
        get throws { try watch.current().pool }
    }

    /// How often a running store looks at its path for a replaced or removed file (one `stat`, off the fast path).
    public static let defaultFileCheckInterval: Duration = .milliseconds(250)

    /// How long after a change made by another process (`authctl`) decisions may still use lookups cached before it.
    /// Changes made through this store are seen by the next decision.
    public static var externalChangeDelay: Duration { StoreChangeProbe.reuseInterval }

    /// The path of the SQLite file behind this store.
    public let path: String

    /// Opens (creating if needed) the store at `path` and applies every pending migration.
    ///
    /// A missing file is created 0600 (its directory 0700); an existing one that group or others may access is
    /// refused, with the `chmod` that fixes it in the error.
    ///
    /// A file later restored over `path` (a new inode) is noticed within `fileCheckInterval` and opened instead; a
    /// removed file makes the store unavailable until a file is there again.
    public init(path: String, fileCheckInterval: Duration = TokenStore.defaultFileCheckInterval) throws {
        try StoreFilePermissions.prepare(path: path)
        try StoreFilePermissions.check(path: path)
        let first = try StoreGeneration.open(path: path, number: 0)
        self.watch = StoreFileWatch(path: path, first: first, checkInterval: fileCheckInterval)
        self.path = path
    }

    /// A number that changes whenever the stored data changes (any connection, any process; another process's change
    /// within `externalChangeDelay`). Nanoseconds to read: callers compare it with the value their cached lookups
    /// were made under.
    ///
    /// A reopened file gets counters of its own (the opening's number in the high bits), so lookups cached from the
    /// replaced file are never used again. Throws while the store is unavailable.
    public func changeCounter() throws -> Int {
        let generation = try watch.current()
        return try generation.probe.read() &+ (generation.number << 40)
    }

    /// Every change goes through here, so the change counter moves for the next decision.
    func write<T>(_ updates: (Database) throws -> T) throws -> T {
        let generation = try watch.current()
        defer { generation.probe.expire() }
        return try generation.pool.write(updates)
    }

    /// Every change goes through here, so the change counter moves for the next decision.
    func write<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let generation = try watch.current()
        defer { generation.probe.expire() }
        return try await generation.pool.write(updates)
    }
}

/// Errors the store reports to its callers, each with a message an operator can act on.
public enum TokenStoreError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(path: String, reason: String)
    /// The store cannot be used right now (its file was removed, or a replacement cannot be opened yet).
    case unavailable(path: String, reason: String)
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
        case .unavailable(let path, let reason): "token store \(path) is unavailable: \(reason)"
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
