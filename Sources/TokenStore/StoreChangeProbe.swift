#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GRDB
import GRDBSQLite
import Synchronization

/// `PRAGMA data_version` on a read-only connection of its own, read at most once per `reuseInterval` and at once
/// after a commit through this store.
///
/// The number moves whenever any other connection, in this process or another (`authctl`), commits a change, so it
/// tells cached lookups whether they may be stale; every API-key and built-in-token decision asks for it. Reading
/// it takes SQLite's WAL read lock (two `fcntl` calls), which at tens of thousands of decisions a second cost more
/// than the rest of a cached API-key decision; so a value read less than `reuseInterval` ago is answered from
/// memory. A commit made by another process is therefore seen by decisions that start `reuseInterval` or more after
/// it; a commit made through this store calls `expire()`, so the gateway's own changes are seen by the next decision.
/// GRDB opens the connection and closes it when the queue goes; in between only this type uses it, under the mutex.
final class StoreChangeProbe: Sendable {
    /// How long a read value is answered from memory.
    static let reuseInterval: Duration = .milliseconds(1)
    private static let reuseNanoseconds = Int64(reuseInterval.components.attoseconds / 1_000_000_000)

    /// Owns the connection; never used after `init` except to keep it open.
    private let queue: DatabaseQueue
    private let statement: Mutex<PreparedStatement>
    /// The last value read, and when (monotonic nanoseconds; 0: expired). The value is stored before the time, and
    /// both only while holding `statement`'s mutex.
    private let value = Atomic<Int>(0)
    private let readAt = Atomic<Int64>(0)

    /// The prepared `PRAGMA data_version`, whose pointer only the mutex's owner touches; nil once closed.
    private struct PreparedStatement: ~Copyable {
        var pointer: OpaquePointer?
    }

    init(path: String) throws {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(5)
        queue = try DatabaseQueue(path: path, configuration: configuration)
        let pointer: OpaquePointer = try queue.inDatabase { db in
            var statement: OpaquePointer?
            let code = sqlite3_prepare_v2(db.sqliteConnection, "PRAGMA data_version", -1, &statement, nil)
            guard code == SQLITE_OK, let statement else {
                throw DatabaseError(resultCode: ResultCode(rawValue: code), message: "cannot prepare PRAGMA data_version")
            }
            return statement
        }
        statement = Mutex(PreparedStatement(pointer: pointer))
    }

    deinit {
        statement.withLock { if let pointer = $0.pointer { _ = sqlite3_finalize(pointer) } }
    }

    /// Finalizes the statement and closes the connection now (the store file was replaced or removed): every later
    /// `read()` throws, so nothing is decided from the file this probe watched.
    func close() {
        statement.withLock { statement in
            if let pointer = statement.pointer { _ = sqlite3_finalize(pointer) }
            statement.pointer = nil
            readAt.store(0, ordering: .releasing)
        }
        try? queue.close()
    }

    /// The store's data version as of at most `reuseInterval` ago, or as of now after `expire()`.
    func read() throws -> Int {
        let now = Self.monotonicNanoseconds()
        let at = readAt.load(ordering: .acquiring)
        if at != 0, now &- at < Self.reuseNanoseconds { return value.load(ordering: .relaxed) }
        return try statement.withLock { statement in
            guard let pointer = statement.pointer else {
                throw DatabaseError(resultCode: .SQLITE_MISUSE, message: "the store's change probe is closed")
            }
            defer { sqlite3_reset(pointer) }
            let code = sqlite3_step(pointer)
            guard code == SQLITE_ROW else {
                throw DatabaseError(resultCode: ResultCode(rawValue: code), message: "PRAGMA data_version failed")
            }
            let version = Int(sqlite3_column_int64(pointer, 0))
            value.store(version, ordering: .relaxed)
            // The time taken before the read: the value is at least that fresh.
            readAt.store(max(now, 1), ordering: .releasing)
            return version
        }
    }

    /// Forgets the value read, after a commit through this store: the next `read()` reads the database again.
    ///
    /// Taking the mutex waits for a read in progress (which may predate the commit) to store its value first.
    func expire() {
        statement.withLock { _ in readAt.store(0, ordering: .releasing) }
    }

    private static func monotonicNanoseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }
}
