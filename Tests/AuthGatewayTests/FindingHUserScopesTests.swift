@testable import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import TokenStore

/// Issue 11, finding H: built-in users carry the scopes and groups an operator gave them (`authctl user add|set
/// NAME --scopes a,b --groups g`); a password sign-in is granted at most those scopes, the consent page shows only
/// what will be granted, and the access tokens carry the groups, so `require.groups` works for built-in tokens.
@Suite("Finding H: built-in users get only their own scopes and carry their groups")
struct FindingHUserScopesTests {
    static let origin = "https://mcp.example.com"
    static let password = "correct horse battery"

    static let policy = testPolicy(
        issuers: "issuers:\n  builtin: { kind: builtin }",
        routes: """
              - name: ffmpeg-admin
                match: { host: mcp.example.com, path: "/ffmpeg/admin/**" }
                resource: https://mcp.example.com/ffmpeg
                accept: [jwt]
                issuers: [builtin]
                require: { scopes: [ffmpeg-admin] }
              - name: ffmpeg
                match: { host: mcp.example.com, path: "/ffmpeg/**" }
                accept: [jwt]
                issuers: [builtin]
                require: { scopes: [ffmpeg] }
              - name: ops
                match: { host: mcp.example.com, path: "/ops/**" }
                accept: [jwt]
                issuers: [builtin]
                require: { groups: [ops] }
            """)

    /// Runs `authctl --db <the fixture's store> ARGS`, with the password on standard input.
    static func authctl(_ fixture: GatewayFixture, _ arguments: [String]) throws -> ProcessRunner.Result {
        try ProcessRunner.run("authctl", ["--db", fixture.store.path] + arguments, stdin: password + "\n")
    }

    static func credentials(_ user: String) -> [(String, String)] { [("username", user), ("password", password)] }

    @Test("finding H: a password sign-in is granted at most the user's scopes, and the consent page lists only those")
    func signInGetsOnlyUserScopes() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        let added = try Self.authctl(fixture, ["user", "add", "alice", "--password-stdin", "--scopes", "ffmpeg", "--groups", "ops"])
        #expect(added.status == 0, "\(added.stderr)")
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: Self.origin + "/ffmpeg", scope: "ffmpeg ffmpeg-admin")
        try await fixture.withLiveServer { http in
            let page = try await flow.open(http)
            let login = try await SignInFlow.post(http, cookie: page.cookie, page.fields + Self.credentials("alice"))
            #expect(login.status == .ok)
            #expect(SignInFlow.listedScopes(in: login.bodyText) == ["ffmpeg"])

            let tokens = try await flow.tokens(http, Self.credentials("alice"))
            #expect(tokens.json["scope"] as? String == "ffmpeg")
            let access = try #require(tokens.json["access_token"] as? String)
            #expect(try await OAuthTokenEndpointTests.auth(http, token: access, uri: "/ffmpeg/jobs").status == .ok)
            #expect(try await OAuthTokenEndpointTests.auth(http, token: access, uri: "/ffmpeg/admin/purge").status == .forbidden)
        }
    }

    @Test("finding H: a user with no scopes configured is granted none (fail closed)")
    func userWithoutScopesGetsNone() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        let added = try Self.authctl(fixture, ["user", "add", "bob", "--password-stdin"])
        #expect(added.status == 0, "\(added.stderr)")
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: Self.origin + "/ffmpeg")
        try await fixture.withLiveServer { http in
            let final = try await flow.signIn(http, Self.credentials("bob"))
            #expect(SignInFlow.code(of: final) == nil)
            #expect(final.status == .forbidden)
        }
    }

    @Test("finding H: the access token carries the user's groups, so require.groups admits the group's members only")
    func tokensCarryGroups() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        #expect(try Self.authctl(fixture, ["user", "add", "alice", "--password-stdin", "--groups", "ops,dev"]).status == 0)
        #expect(try Self.authctl(fixture, ["user", "add", "bob", "--password-stdin", "--groups", "dev"]).status == 0)
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: Self.origin + "/ops")
        try await fixture.withLiveServer { http in
            let alice = try #require(try await flow.tokens(http, Self.credentials("alice")).json["access_token"] as? String)
            #expect(try await OAuthTokenEndpointTests.auth(http, token: alice, uri: "/ops/deploy").status == .ok)
            let bob = try #require(try await flow.tokens(http, Self.credentials("bob")).json["access_token"] as? String)
            #expect(try await OAuthTokenEndpointTests.auth(http, token: bob, uri: "/ops/deploy").status == .forbidden)
        }
    }

    @Test("finding H: user set replaces a user's scopes and groups, and user list shows them")
    func userSetAndList() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        #expect(try Self.authctl(fixture, ["user", "add", "alice", "--password-stdin", "--scopes", "ffmpeg"]).status == 0)
        let set = try Self.authctl(fixture, ["user", "set", "alice", "--scopes", "ffmpeg,ffmpeg-admin", "--groups", "ops"])
        #expect(set.status == 0, "\(set.stderr)")
        let listed = try Self.authctl(fixture, ["user", "list", "--json"])
        let users = try #require(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])
        #expect(users.first?["scopes"] as? [String] == ["ffmpeg", "ffmpeg-admin"])
        #expect(users.first?["groups"] as? [String] == ["ops"])
        let flow = SignInFlow(client: try SignInFlow.registerClient(fixture.store), resource: Self.origin + "/ffmpeg")
        try await fixture.withLiveServer { http in
            let tokens = try await flow.tokens(http, Self.credentials("alice"))
            #expect(tokens.json["scope"] as? String == "ffmpeg-admin ffmpeg")
        }
        let bad = try Self.authctl(fixture, ["user", "set", "alice", "--scopes", "a b"])
        #expect(bad.status == 64)
        #expect(bad.stderr.contains("--scopes"))
    }
}
