import GRDB
import GRDBSQLite
import Synchronization

/// `PRAGMA data_version` on a read-only connection of its own, stepped through SQLite's C API under a mutex.
///
/// The number moves whenever any other connection, in this process or another (`authctl`), commits a change, so
/// it tells cached lookups whether they may be stale; it is read on every API-key request. Going through GRDB's
/// `DatabaseQueue` costs a dispatch-queue hop per read (about as much as the rest of an API-key decision); the
/// statement itself takes well under a microsecond. GRDB opens the connection and closes it when the queue goes;
/// in between only this type uses it, one caller at a time.
final class StoreChangeProbe: Sendable {
    /// Owns the connection; never used after `init` except to keep it open.
    private let queue: DatabaseQueue
    private let statement: Mutex<PreparedStatement>

    /// The prepared `PRAGMA data_version`, whose pointer only the mutex's owner touches.
    private struct PreparedStatement: ~Copyable {
        let pointer: OpaquePointer
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
        statement.withLock { _ = sqlite3_finalize($0.pointer) }
    }

    /// The connection's current data version.
    func read() throws -> Int {
        try statement.withLock { statement in
            defer { sqlite3_reset(statement.pointer) }
            let code = sqlite3_step(statement.pointer)
            guard code == SQLITE_ROW else {
                throw DatabaseError(resultCode: ResultCode(rawValue: code), message: "PRAGMA data_version failed")
            }
            return Int(sqlite3_column_int64(statement.pointer, 0))
        }
    }
}
