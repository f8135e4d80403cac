import Foundation
import GRDB
import Testing

@testable import TokenStore

/// Issue 12, item 4: a store file replaced under a running gateway (a restored copy moved over it: a new inode at
/// the same path) or removed is noticed, and nothing is decided from the old file afterwards.
@Suite("Store file replaced or removed under a running store", .serialized)
struct StoreReplacementTests {
    let directory: URL
    let path: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("store-replace-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        path = directory.appendingPathComponent("store.sqlite").path
    }

    /// A self-contained copy through SQLite's backup API (what `sqlite3 store.db .backup` makes), mode 0600.
    func backup(_ store: TokenStore) throws -> String {
        let copy = directory.appendingPathComponent("backup-\(UUID().uuidString).sqlite").path
        let target = try DatabaseQueue(path: copy)
        try store.database.backup(to: target)
        try target.close()
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: copy)
        return copy
    }

    /// `cp backup new && mv new store.db`: a new inode at the store's path.
    func restore(_ backup: String, mode: Int = 0o600) throws {
        let new = path + ".new"
        try? FileManager.default.removeItem(atPath: new)
        try FileManager.default.copyItem(atPath: backup, toPath: new)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: new)
        #expect(rename(new, path) == 0)
    }

    /// Polls `condition` until it holds or `within` has passed; whether it held.
    func eventually(within: Duration = .seconds(1), _ condition: () async throws -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + within
        while true {
            if (try? await condition()) == true { return true }
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    func issue(_ store: TokenStore, _ name: String) throws -> (APIKey, APIKeySecret) {
        try store.issueKey(APIKeyRequest(subject: "alice", name: name, scopes: ["notes"]))
    }

    @Test("a restored copy moved over the store file is read within 1 s: a key only in the old file is unknown")
    func restoredCopyIsRead() async throws {
        let store = try TokenStore(path: path)
        let (kept, keptSecret) = try issue(store, "kept")
        let saved = try backup(store)
        let (_, newerSecret) = try issue(store, "newer")
        #expect(try await store.findKey(digest: newerSecret.digest) != nil)

        try restore(saved)
        #expect(await eventually { try await store.findKey(digest: newerSecret.digest) == nil })
        #expect(try await store.findKey(digest: keptSecret.digest)?.id == kept.id)
    }

    @Test("a key revoked by another process on the restored copy is refused within 1 s")
    func revocationOnRestoredCopyCounts() async throws {
        let store = try TokenStore(path: path)
        let (key, secret) = try issue(store, "to-revoke")
        let saved = try backup(store)
        let (_, newerSecret) = try issue(store, "newer")
        try restore(saved)
        #expect(await eventually { try await store.findKey(digest: newerSecret.digest) == nil })

        try TokenStore(path: path).revokeKey(id: key.id)  // authctl revoke-key, on the restored file
        #expect(await eventually { try await store.findKey(digest: secret.digest)?.revokedAt != nil })
    }

    @Test("the old file's -wal and -shm are removed when the copy is opened, so nothing pairs them with it")
    func staleJournalIsRemoved() async throws {
        let store = try TokenStore(path: path)
        let saved = try backup(store)
        let (newer, newerSecret) = try issue(store, "only-in-the-old-wal")
        #expect(FileIdentity.of(path + "-wal").map { $0.size > 0 } == true, "the newer key is in the old file's -wal")
        try restore(saved)
        #expect(await eventually { try await store.findKey(digest: newerSecret.digest) == nil })

        let other = try TokenStore(path: path)  // authctl, opening the restored file afterwards
        #expect(try other.key(id: newer.id) == nil)
        let check = try await other.database.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") }
        #expect(check == "ok")
    }

    @Test("an idle store lets go of the replaced file's -wal within 1 s, so authctl opening the copy later reads the copy")
    func idleStoreReleasesTheOldJournal() async throws {
        let store = try TokenStore(path: path)
        let saved = try backup(store)
        let (newer, newerSecret) = try issue(store, "only-in-the-old-wal")
        let walPath = path + "-wal"
        func walHoldsNewer() -> Bool {
            guard let bytes = FileManager.default.contents(atPath: walPath) else { return false }
            return bytes.range(of: newerSecret.digest) != nil
        }
        #expect(walHoldsNewer())
        try restore(saved)
        // No lookup through `store` meanwhile: only its background check can notice.
        #expect(await eventually { !walHoldsNewer() })

        #expect(try TokenStore(path: path).key(id: newer.id) == nil)
        #expect(try await store.findKey(digest: newerSecret.digest) == nil)
    }

    @Test("lookups cached from the replaced file are never used again: the change counter moves on reopen")
    func changeCounterMovesOnReopen() async throws {
        let store = try TokenStore(path: path)
        let saved = try backup(store)
        let before = try store.changeCounter()
        try restore(saved)
        #expect(await eventually { try store.changeCounter() != before })
        #expect(try store.changeCounter() >> 40 > before >> 40)
    }

    @Test("a removed store file makes lookups fail within 1 s, and a file restored there is used again")
    func removedFileIsUnavailableUntilRestored() async throws {
        let store = try TokenStore(path: path)
        let (key, secret) = try issue(store, "kept")
        let saved = try backup(store)
        #expect(unlink(path) == 0)
        #expect(await eventually {
            do {
                _ = try await store.findKey(digest: secret.digest)
                return false
            } catch {
                return "\(error)".contains("unavailable")
            }
        })
        #expect(throws: TokenStoreError.self) { try store.changeCounter() }
        #expect(throws: (any Error).self) { try store.issueKey(APIKeyRequest(subject: "a", name: "b", scopes: [])) }

        try restore(saved)
        #expect(await eventually { try await store.findKey(digest: secret.digest)?.id == key.id })
    }

    @Test("a restored copy that group or others may read is not opened until it is 0600")
    func exposedCopyIsRefused() async throws {
        let store = try TokenStore(path: path)
        let (_, secret) = try issue(store, "kept")
        let saved = try backup(store)
        try restore(saved, mode: 0o644)
        #expect(await eventually {
            do {
                _ = try store.changeCounter()
                return false
            } catch {
                return "\(error)".contains("chmod 600")
            }
        })
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        #expect(await eventually { try await store.findKey(digest: secret.digest) != nil })
    }

    @Test("between checks the path is not looked at: with a long interval a replacement is not seen yet")
    func noLookBeforeTheInterval() async throws {
        let store = try TokenStore(path: path, fileCheckInterval: .seconds(3600))
        let saved = try backup(store)
        let (_, newerSecret) = try issue(store, "newer")
        try restore(saved)
        for _ in 0..<50 { _ = try store.changeCounter() }
        #expect(try await store.findKey(digest: newerSecret.digest) != nil)
    }
}
