#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GRDB

/// One opening of the store file: its connection pool, its change probe, and which files (main, `-wal`, `-shm`)
/// it opened, so that a file restored at the same path is told apart from it and never paired with its journal.
final class StoreGeneration: Sendable {
    let pool: DatabasePool
    let probe: StoreChangeProbe
    /// The main file as it was just before it was opened (looked at first: a replacement racing the open shows up
    /// as a mismatch at the next check and costs one more reopen, never a file watched under the wrong identity).
    let file: FileIdentity
    /// The `-wal` and `-shm` files this opening created or joined, by path.
    let journal: [String: FileIdentity]
    /// Counts openings of the store in this process; part of the change counter, so caches from an older opening
    /// are never used with a newer one.
    let number: Int

    private init(pool: DatabasePool, probe: StoreChangeProbe, file: FileIdentity, journal: [String: FileIdentity], number: Int) {
        self.pool = pool
        self.probe = probe
        self.file = file
        self.journal = journal
        self.number = number
    }

    /// Opens the file at `path` (which must exist and not be empty) and applies every pending migration.
    static func open(path: String, number: Int) throws -> StoreGeneration {
        guard let file = FileIdentity.of(path) else { throw TokenStoreError.cannotOpen(path: path, reason: "the file does not exist") }
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
            let pool = try DatabasePool(path: path, configuration: configuration)
            try StoreMigrations.migrator.migrate(pool)
            let probe = try StoreChangeProbe(path: path)
            _ = try probe.read()
            var journal: [String: FileIdentity] = [:]
            for companion in [path + "-wal", path + "-shm"] { journal[companion] = FileIdentity.of(companion) }
            return StoreGeneration(pool: pool, probe: probe, file: file, journal: journal, number: number)
        } catch let error as DatabaseError {
            throw TokenStoreError.cannotOpen(path: path, reason: error.message ?? error.description)
        }
    }

    /// Closes this opening after its file was replaced or removed, and removes its `-wal` and `-shm` if they are
    /// still at their paths: SQLite finds those by name, so left there they would be paired with whatever file is
    /// at the path next, and the old file's pages in the `-wal` read (and checkpointed) as the new file's.
    ///
    /// A passive checkpoint first copies what it can of the `-wal` into the old file, which keeps its changes if
    /// that file was only moved away and comes back. The files are compared and removed while this opening still
    /// holds them open, so their inode numbers cannot have been reused by another file yet. Reads in progress
    /// finish first (the pool's barrier); later ones fail, which callers answer with 503.
    func retire() {
        try? pool.writeWithoutTransaction { db in _ = try db.execute(sql: "PRAGMA wal_checkpoint(PASSIVE)") }
        for (companion, identity) in journal where identity.isSameFile(as: FileIdentity.of(companion)) {
            unlink(companion)
        }
        probe.close()
        try? pool.close()
    }
}
