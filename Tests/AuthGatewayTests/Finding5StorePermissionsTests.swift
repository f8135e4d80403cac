import Foundation
import Testing
import TokenStore

/// Issue 11, finding 5: the store holds the authorization server's private signing key, so only its owner may read it.
@Suite("Finding 5: store file permissions", .serialized)
struct Finding5StorePermissionsTests {
    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("store-mode-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    static func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }

    @Test("finding 5: a new store and its -wal and -shm files are created 0600, and a directory it creates 0700")
    func createdPrivate() throws {
        let storeDirectory = directory.appendingPathComponent("data")
        let path = storeDirectory.appendingPathComponent("store.sqlite").path
        let store = try TokenStore(path: path)
        _ = try store.currentSigningKey()
        #expect(try Self.mode(storeDirectory.path) == 0o700)
        for file in [path, path + "-wal", path + "-shm"] {
            #expect(FileManager.default.fileExists(atPath: file), "\(file)")
            #expect(try Self.mode(file) == 0o600, "\(file)")
        }
    }

    @Test("finding 5: a store readable by group or others is refused with a message naming chmod 600", arguments: [0o644, 0o640, 0o604, 0o660])
    func readableStoreRefused(mode: Int) throws {
        let path = directory.appendingPathComponent("store.sqlite").path
        _ = try TokenStore(path: path)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        #expect {
            try TokenStore(path: path)
        } throws: { error in
            "\(error)".contains("chmod 600") && "\(error)".contains(path)
        }
    }

    @Test("finding 5: a readable -wal file left beside a private store is refused too")
    func readableWALRefused() throws {
        let path = directory.appendingPathComponent("store.sqlite").path
        _ = try TokenStore(path: path)
        FileManager.default.createFile(atPath: path + "-wal", contents: Data(), attributes: [.posixPermissions: 0o644])
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path + "-wal")
        #expect {
            try TokenStore(path: path)
        } throws: { error in
            "\(error)".contains("chmod 600") && "\(error)".contains(path + "-wal")
        }
    }

    @Test("finding 5: authctl and authgateway refuse a world-readable store with exit 66 and say chmod 600")
    func commandsRefuse() throws {
        let path = directory.appendingPathComponent("store.sqlite").path
        _ = try TokenStore(path: path)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        let authctl = try ProcessRunner.run("authctl", ["list-keys", "--db", path])
        #expect(authctl.stderr.contains("chmod 600"))
        // Should the refusal be missing, a gateway that starts would run until the test times out: stop here.
        try #require(authctl.status == 66)
        let gateway = try ProcessRunner.run(
            "authgateway", ["--policy", ProcessRunner.packageRoot.appendingPathComponent("policies/example.yaml").path, "--db", path, "--listen", "127.0.0.1:0"])
        #expect(gateway.status == 66)
        #expect(gateway.stderr.contains("chmod 600"))
    }
}
