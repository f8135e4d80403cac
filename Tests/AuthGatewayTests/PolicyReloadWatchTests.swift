import AuthGateway
import Foundation
import Testing

/// When the policy reloader loads a changed file: only after it stood still for one poll (a half-written file can
/// be a valid, more permissive policy), and also after a `chmod` that makes an unreadable file readable.
@Suite("Policy reload watch")
struct PolicyReloadWatchTests {
    /// Whether each poll, seeing these fingerprints in turn, loads the policy.
    func loads(from applied: String, _ polls: [String]) -> [Bool] {
        var watch = PolicyReloader.Watch(applied: applied)
        return polls.map { watch.observe($0) }
    }

    @Test("a change is loaded only after the files stood still for one poll")
    func changeIsLoadedWhenStable() {
        // "half": first sight of a change, the writer may not be done; "b" twice: unchanged for one poll, loaded
        // once; back to what is loaded: nothing to do.
        let polls = ["a", "half", "b", "b", "b", "c", "b", "b"]
        #expect(loads(from: "a", polls) == [false, false, false, true, false, false, false, false])
    }

    @Test("a refused change is not retried until the files change again")
    func refusedChangeIsNotRetried() {
        #expect(loads(from: "good", ["bad", "bad", "bad", "fixed", "fixed"]) == [false, true, false, false, true])
    }

    @Test("chmod and chown of a policy file change its fingerprint, though its modification time stays")
    func permissionChangeChangesFingerprint() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("reload-watch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("policy.yaml").path
        try "routes: []\n".write(toFile: file, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: file)
        let unreadable = PolicyReloader.fingerprint(of: file)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file)
        let readable = PolicyReloader.fingerprint(of: file)
        #expect(unreadable != readable)

        // The same bytes at the same path as a new file (a restored copy): another inode.
        let copy = directory.appendingPathComponent("copy.yaml").path
        try FileManager.default.copyItem(atPath: file, toPath: copy)
        let before = try FileManager.default.attributesOfItem(atPath: file)[.modificationDate] as? Date
        try FileManager.default.setAttributes([.modificationDate: before as Any, .posixPermissions: 0o644], ofItemAtPath: copy)
        #expect(rename(copy, file) == 0)
        #expect(PolicyReloader.fingerprint(of: file) != readable)
    }
}
