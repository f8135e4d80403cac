import AuthGateway
import Crypto
import Foundation
import Logging
import Testing
import TokenStore

@Suite("Token store")
struct TokenStoreTests {
    let directory: URL
    let path: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("store-test-\(UUID().uuidString)")
        path = directory.appendingPathComponent("nested/store.sqlite").path
    }

    @Test("issued keys carry the readable prefix and 256 bits of randomness")
    func keyShape() throws {
        let store = try TokenStore(path: path)
        let (_, first) = try store.issueKey(APIKeyRequest(subject: "alice", name: "a", scopes: ["x"]))
        let (_, second) = try store.issueKey(APIKeyRequest(subject: "alice", name: "a", scopes: ["x"]))
        #expect(first.plaintext.hasPrefix("agk_"))
        #expect(first.plaintext.count == 4 + 64)
        #expect(APIKeySecret.hasKeyShape(first.plaintext))
        #expect(first.plaintext != second.plaintext)
    }

    @Test("only the SHA-256 digest of a key is stored, never the key")
    func onlyDigestStored() throws {
        let store = try TokenStore(path: path)
        let (record, secret) = try store.issueKey(APIKeyRequest(subject: "alice", name: "a", scopes: ["x"]))
        #expect(record.digest == Data(SHA256.hash(data: Data(secret.plaintext.utf8))))
        let randomPart = String(secret.plaintext.dropFirst(12))
        for file in try FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent("nested").path) {
            let bytes = try Data(contentsOf: directory.appendingPathComponent("nested/\(file)"))
            #expect(bytes.range(of: Data(randomPart.utf8)) == nil, "\(file) holds the key")
        }
    }

    @Test("a key is found by its digest and not by any other value")
    func findByDigest() async throws {
        let store = try TokenStore(path: path)
        let (record, secret) = try store.issueKey(APIKeyRequest(subject: "alice", name: "a", scopes: ["x"]))
        #expect(try await store.findKey(digest: secret.digest)?.id == record.id)
        #expect(try await store.findKey(digest: APIKeySecret.digest(of: secret.plaintext + "0")) == nil)
    }

    @Test("revoking an unknown or already revoked key is an error that names the key")
    func revokeErrors() throws {
        let store = try TokenStore(path: path)
        let (record, _) = try store.issueKey(APIKeyRequest(subject: "alice", name: "a", scopes: []))
        #expect(throws: TokenStoreError.keyNotFound(id: "key_nope")) { try store.revokeKey(id: "key_nope") }
        try store.revokeKey(id: record.id)
        #expect(throws: TokenStoreError.keyAlreadyRevoked(id: record.id)) { try store.revokeKey(id: record.id) }
        #expect(try store.key(id: record.id)?.unusableReason(at: Date()) == .revoked)
    }

    @Test("rotation keeps subject, scopes and route and lets the old key overlap")
    func rotationWithOverlap() throws {
        let store = try TokenStore(path: path)
        let now = Date()
        let (old, _) = try store.issueKey(APIKeyRequest(subject: "alice", name: "laptop", scopes: ["a", "b"], route: "ffmpeg"), now: now)
        let (new, secret, updatedOld) = try store.rotateKey(id: old.id, overlap: 3600, now: now)
        #expect(new.subject == "alice" && new.name == "laptop" && new.scopeList == ["a", "b"] && new.route == "ffmpeg")
        #expect(new.rotatedFrom == old.id)
        #expect(new.digest == secret.digest)
        #expect(updatedOld.expiresAt == now.addingTimeInterval(3600))
        #expect(updatedOld.unusableReason(at: now.addingTimeInterval(3599)) == nil)
        #expect(updatedOld.unusableReason(at: now.addingTimeInterval(3601)) == .expired)
    }

    @Test("rotation with no overlap revokes the old key at once, and never extends an earlier expiry")
    func rotationWithoutOverlap() throws {
        let store = try TokenStore(path: path)
        let now = Date()
        let (a, _) = try store.issueKey(APIKeyRequest(subject: "alice", name: "a", scopes: []), now: now)
        let (_, _, oldA) = try store.rotateKey(id: a.id, overlap: 0, now: now)
        #expect(oldA.revokedAt != nil)
        let (b, _) = try store.issueKey(APIKeyRequest(subject: "bob", name: "b", scopes: [], expiresAt: now.addingTimeInterval(60)), now: now)
        let (_, _, oldB) = try store.rotateKey(id: b.id, overlap: 86400, now: now)
        #expect(abs((oldB.expiresAt?.timeIntervalSince(now) ?? 0) - 60) < 0.01)
    }

    @Test("key uses are written in batches by the recorder, not on lookup")
    func lastUsedIsBatched() async throws {
        let store = try TokenStore(path: path)
        let (record, _) = try store.issueKey(APIKeyRequest(subject: "alice", name: "a", scopes: []))
        let recorder = LastUsedRecorder(store: store, logger: Logger(label: "test"))
        let used = Date(timeIntervalSince1970: 1_900_000_000)
        recorder.record(keyID: record.id, at: used)
        #expect(try store.key(id: record.id)?.lastUsedAt == nil)
        await recorder.flush()
        #expect(try store.key(id: record.id)?.lastUsedAt == used)
    }

    @Test("reopening a store keeps its keys and re-applies no migration")
    func reopen() throws {
        let (record, _) = try TokenStore(path: path).issueKey(APIKeyRequest(subject: "alice", name: "a", scopes: []))
        let reopened = try TokenStore(path: path)
        #expect(try reopened.listKeys().map(\.id) == [record.id])
    }

    @Test("a store that cannot be created is an error naming the path")
    func unopenable() throws {
        let error = try #require(throws: TokenStoreError.self) { try TokenStore(path: "/proc/nope/store.sqlite") }
        #expect(error.description.contains("/proc/nope/store.sqlite"))
    }
}
