import AuthGateway
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import TokenStore

@Suite("Users and signing keys of the built-in authorization server")
struct UsersAndSigningKeysTests {
    func store() throws -> TokenStore {
        try TokenStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("users-\(UUID().uuidString)/s.sqlite").path)
    }

    @Test("a user logs in with the password set for them, never with another, and not once disabled")
    func passwordLogin() throws {
        let store = try store()
        let user = try store.addUser(username: "alice", password: "correct horse battery")
        #expect(!user.passwordHash.contains("correct horse"))
        #expect(user.passwordHash.hasPrefix("$2"))
        #expect(try store.authenticateUser(username: "alice", password: "correct horse battery")?.id == user.id)
        #expect(try store.authenticateUser(username: "alice", password: "wrong horse battery") == nil)
        #expect(try store.authenticateUser(username: "nobody", password: "correct horse battery") == nil)
        try store.setDisabled(username: "alice", true)
        #expect(try store.authenticateUser(username: "alice", password: "correct horse battery") == nil)
        try store.setDisabled(username: "alice", false)
        try store.setPassword(username: "alice", password: "a brand new password")
        #expect(try store.authenticateUser(username: "alice", password: "correct horse battery") == nil)
        #expect(try store.authenticateUser(username: "alice", password: "a brand new password") != nil)
    }

    @Test("weak passwords, bad names and duplicates are refused with a reason", arguments: [
        ("alice", "short", "at least 10 characters"), ("al ice", "long enough password", "user name may contain"),
        ("alice", String(repeating: "x", count: 73), "at most 72 bytes"),
    ])
    func refusedUsers(_ testCase: (String, String, String)) throws {
        let store = try store()
        let error = try #require(throws: TokenStoreError.self) { try store.addUser(username: testCase.0, password: testCase.1) }
        #expect(error.description.contains(testCase.2))
    }

    @Test("adding a user twice is refused")
    func duplicateUser() throws {
        let store = try store()
        try store.addUser(username: "alice", password: "correct horse battery")
        #expect(throws: TokenStoreError.userExists(username: "alice")) { try store.addUser(username: "alice", password: "another long password") }
    }

    @Test("rotation makes a new current key and keeps exactly the previous one published")
    func signingKeyRotation() throws {
        let store = try store()
        let first = try store.currentSigningKey()
        #expect(try store.currentSigningKey().kid == first.kid)
        let second = try store.rotateSigningKey()
        let third = try store.rotateSigningKey()
        #expect(try store.currentSigningKey().kid == third.kid)
        #expect(try store.publishedSigningKeys().map(\.kid) == [third.kid, second.kid])
    }

    @Test("a token signed with the current key verifies through the gateway's own published JWKS")
    func publishedKeysVerifyTokens() async throws {
        // The JWKS is served by the gateway under test; the issuer's jwks_url points at it once the port is known.
        let setup = try GatewayFixture(policy: testPolicy(routes: "  - name: r\n    match: { path: /x }\n    accept: [api_key]\n"))
        let key = try setup.store.currentSigningKey()
        try await setup.withLiveServer { client in
            let port = try #require(client.port)
            let jwks = try await client.execute(uri: "/oauth/jwks.json", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.header("Access-Control-Allow-Origin") == "*")
                #expect(!response.bodyText.contains("PRIVATE"))
                #expect(!response.bodyText.contains("\"d\""))
                return response.json
            }
            #expect((jwks["keys"] as? [[String: Any]])?.first?["kid"] as? String == key.kid)

            let verifier = try GatewayFixture(policy: testPolicy(
                issuers: "issuers:\n  self: { issuer: \"https://mcp.example.com\", jwks_url: \"http://127.0.0.1:\(port)/oauth/jwks.json\", algorithms: [ES256] }",
                routes: "  - name: ffmpeg\n    match: { path: \"/ffmpeg/**\" }\n    accept: [jwt]\n"))
            let now = Int(Date().timeIntervalSince1970)
            let claims: [String: Any] = ["iss": "https://mcp.example.com", "sub": "alice", "aud": "https://mcp.example.com/ffmpeg", "exp": now + 300, "iat": now]
            let token = try TestIssuer(issuer: "https://mcp.example.com").sign(claims, header: ["alg": "ES256", "kid": key.kid, "typ": "at+jwt"]) { input in
                try key.privateKey.signature(for: input).rawRepresentation
            }
            try await verifier.withLiveServer { verifierClient in
                try await verifierClient.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(token)")])) { response in
                    #expect(response.status == .ok)
                    #expect(response.header("X-Auth-Subject") == "alice")
                }
            }
        }
    }
}
