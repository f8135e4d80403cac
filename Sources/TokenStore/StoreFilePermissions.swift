#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Who may open the store's files: it holds the authorization server's private signing key and every credential's
/// digest, so only its owner (the gateway's user) may read or write them.
enum StoreFilePermissions {
    /// The files SQLite keeps for a store in WAL mode.
    static func files(of path: String) -> [String] { [path, path + "-wal", path + "-shm"] }

    /// Creates a missing directory (0700) and a missing store file (0600, empty) before SQLite opens it: SQLite
    /// would create it under the process umask (often world-readable 0644), and it creates `-wal` and `-shm` with the
    /// mode of the database file, so those follow.
    static func prepare(path: String) throws(TokenStoreError) {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        if !FileManager.default.fileExists(atPath: directory) {
            let parent = URL(fileURLWithPath: directory).deletingLastPathComponent().path
            do {
                try FileManager.default.createDirectory(
                    atPath: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw .cannotOpen(path: path, reason: "cannot create directory \(parent): \(error.localizedDescription)")
            }
            // The store's own directory gets its mode from mkdir itself: FileManager creates, then chmods, and a process
            // killed between the two left it 0755 for good (issue 12 crash loop).
            if mkdir(directory, 0o700) != 0, errno != EEXIST {
                throw .cannotOpen(path: path, reason: "cannot create directory \(directory): \(String(cString: strerror(errno)))")
            }
        }
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if descriptor >= 0 {
            close(descriptor)
        } else if errno != EEXIST {
            throw .cannotOpen(path: path, reason: "cannot create the file: \(String(cString: strerror(errno)))")
        }
    }

    /// Refuses a store whose file, `-wal` or `-shm` grants any access to group or others.
    static func check(path: String) throws(TokenStoreError) {
        var exposed: [(file: String, mode: mode_t)] = []
        for file in files(of: path) {
            var status = stat()
            guard stat(file, &status) == 0 else { continue }
            if status.st_mode & 0o077 != 0 { exposed.append((file, status.st_mode & 0o777)) }
        }
        guard !exposed.isEmpty else { return }
        let described = exposed.map { "\($0.file) (mode \(String($0.mode, radix: 8)))" }.joined(separator: ", ")
        throw .cannotOpen(
            path: path,
            reason: "\(described) can be read or written by group or others, and the store holds the private signing key;"
                + " run: chmod 600 \(exposed.map(\.file).joined(separator: " "))")
    }
}
