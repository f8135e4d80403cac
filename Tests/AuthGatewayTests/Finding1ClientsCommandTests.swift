import Foundation
import Testing
import TokenStore

/// Issue 11 finding 1: `authctl clients add` makes machine clients; `clients list/revoke` cover them.
@Suite("Finding 1: authctl clients add", .serialized)
struct Finding1ClientsCommandTests {
    let directory: URL
    var db: String { directory.appendingPathComponent("store.sqlite").path }
    static let resource = "https://mcp.example.com/ffmpeg"

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("clients-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    @Test("finding 1: clients add --json prints client_id and client_secret once; the store keeps a digest; list and revoke cover it")
    func addListRevoke() throws {
        let added = try ProcessRunner.run("authctl", [
            "--db", db, "clients", "add", "ci-runner", "--grant", "client_credentials", "--subject", "ci", "--scopes", "ffmpeg,memory",
            "--resource", Self.resource, "--json",
        ])
        #expect(added.status == 0, "\(added.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(added.stdout.utf8)) as? [String: Any])
        let id = try #require(object["client_id"] as? String)
        let secret = try #require(object["client_secret"] as? String)
        #expect(secret.hasPrefix(OpaqueTokenPrefix.clientSecret))
        #expect(object["subject"] as? String == "ci")
        #expect(object["scopes"] as? [String] == ["ffmpeg", "memory"])
        #expect(object["resources"] as? [String] == [Self.resource])
        #expect(object["grant_types"] as? [String] == ["client_credentials"])

        let store = try TokenStore(path: db)
        let stored = try #require(try store.client(id: id))
        #expect(stored.isMachineClient)
        #expect(stored.secretDigest == OpaqueToken.digest(of: secret))

        let listed = try ProcessRunner.run("authctl", ["--db", db, "clients", "list", "--json"])
        #expect(listed.status == 0)
        #expect(!listed.stdout.contains(secret))
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])
        #expect(rows.first?["client_id"] as? String == id)
        #expect(rows.first?["source"] as? String == "operator")
        #expect(rows.first?["subject"] as? String == "ci")

        let revoked = try ProcessRunner.run("authctl", ["--db", db, "clients", "revoke", id])
        #expect(revoked.status == 0, "\(revoked.stderr)")
        #expect(try store.authenticateClient(id: id, secret: secret) == nil)
    }

    @Test("finding 1: clients add without --json prints the id and the secret on stdout")
    func addText() throws {
        let added = try ProcessRunner.run("authctl", [
            "--db", db, "clients", "add", "rs", "--introspect",
        ])
        #expect(added.status == 0, "\(added.stderr)")
        #expect(added.stdout.contains("client_id: cli_"))
        #expect(added.stdout.contains("client_secret: agcs_"))
        #expect(added.stderr.contains("only time"))
    }

    static let badArguments: [([String], String)] = [
        (["clients", "add", "x", "--grant", "authorization_code", "--subject", "s", "--scopes", "a", "--resource", resource], "--grant"),
        (["clients", "add", "x", "--grant", "client_credentials", "--scopes", "a", "--resource", resource], "--subject"),
        (["clients", "add", "x", "--grant", "client_credentials", "--subject", "s", "--resource", resource], "--scopes"),
        (["clients", "add", "x", "--grant", "client_credentials", "--subject", "s", "--scopes", "a"], "--resource"),
        (["clients", "add", "x", "--grant", "client_credentials", "--subject", "s", "--scopes", "a", "--resource", "ffmpeg"], "--resource"),
        (["clients", "add", "x"], "--grant"),
        (["clients", "add", "x", "--introspect", "--subject", "s"], "--subject"),
    ]

    @Test("finding 1: clients add refuses incomplete or bad arguments with exit 64 naming the argument", arguments: badArguments)
    func badArgument(_ testCase: ([String], String)) throws {
        let result = try ProcessRunner.run("authctl", ["--db", db] + testCase.0)
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stderr.contains(testCase.1), "\(result.stderr)")
    }
}
