import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

/// The forwardAuth endpoint, over a real loopback socket, with API keys from a real SQLite store.
@Suite("forwardAuth decisions with API keys")
struct APIKeyDecisionTests {
    static let identityHeaders = ["X-Auth-Subject", "X-Auth-Method", "X-Auth-Scopes", "X-Auth-Client", "X-Auth-Issuer", "X-Auth-Key-Id", "X-Auth-Route"]

    func fixture(trustedProxies: String = "[127.0.0.1/32, \"::1/128\"]", environment: [String: String] = ["TRELLO_TOKEN": "trello-secret"]) throws -> GatewayFixture {
        try GatewayFixture(policy: testPolicy(trustedProxies: trustedProxies, routes: seedRoutes), environment: environment)
    }

    @Test("a valid key is allowed with every identity header, empty ones included")
    func validKeyAllowed() async throws {
        let fixture = try fixture()
        let (key, id) = try fixture.issueKey(subject: "alice", name: "laptop", scopes: ["ffmpeg", "memory"])
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/v1/tools", extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .ok)
                #expect(response.header("X-Auth-Subject") == "alice")
                #expect(response.header("X-Auth-Method") == "api_key")
                #expect(response.header("X-Auth-Scopes") == "ffmpeg memory")
                #expect(response.header("X-Auth-Client") == "laptop")
                #expect(response.header("X-Auth-Issuer") == "")
                #expect(response.header("X-Auth-Key-Id") == id)
                #expect(response.header("X-Auth-Route") == "ffmpeg")
                #expect(response.header("Cache-Control") == "no-store")
                #expect(!response.bodyText.contains(key))
            }
        }
    }

    @Test("spoofed identity headers from the client are answered with the gateway's own values")
    func spoofedIdentityHeaders() async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: ["ffmpeg"])
        // (Aliases such as X_Auth_Subject are refused outright: FindingGHeaderAliasTests.)
        let spoofed = Self.identityHeaders.map { ($0, "mallory") } + [("Authorization", "Bearer \(key)")]
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x", extra: spoofed)) { response in
                #expect(response.status == .ok)
                for name in Self.identityHeaders {
                    #expect(response.headers[values: HTTPField.Name(name)!].count == 1, "\(name) must be answered exactly once")
                    #expect(response.header(name) != "mallory", "\(name)")
                }
                #expect(response.header("X-Auth-Subject") == "alice")
            }
        }
    }

    @Test("the key can come in the configured X-API-Key header, and Bearer is case-insensitive")
    func keyHeaderAndSchemeCase() async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(subject: "bob", scopes: ["ffmpeg"])
        try await fixture.withLiveServer { client in
            for extra in [[("X-API-Key", key)], [("Authorization", "bearer   \(key)")], [("Authorization", "BEARER \(key)")]] {
                try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x", extra: extra)) { response in
                    #expect(response.status == .ok)
                    #expect(response.header("X-Auth-Subject") == "bob")
                }
            }
        }
    }

    @Test("a request with both Authorization and X-API-Key is refused, whichever of the two is valid")
    func twoCredentialsAreRefused() async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: ["ffmpeg"])
        let unknown = "agk_" + String(repeating: "0", count: 64)
        let pairs = [("Bearer garbage", key), ("Bearer \(key)", unknown), ("Bearer \(key)", key)]
        try await fixture.withLiveServer { client in
            for (authorization, keyHeader) in pairs {
                try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", authorization), ("X-API-Key", keyHeader)])) { response in
                    #expect(response.status == .badRequest)
                    #expect(response.json["error"] as? String == "invalid_request")
                    #expect(response.header("X-Auth-Subject") == nil)
                }
            }
        }
    }

    @Test("no credential gets a 401 whose challenge points at the protected resource metadata")
    func missingCredential() async throws {
        let fixture = try fixture()
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x")) { response in
                #expect(response.status == .unauthorized)
                let challenge = try #require(response.header("WWW-Authenticate"))
                #expect(challenge.hasPrefix("Bearer realm=\"mcp\""))
                #expect(challenge.contains("resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/ffmpeg\""))
                #expect(!challenge.contains("error="))
                #expect(response.header("Cache-Control") == "no-store")
                #expect(response.header("Content-Type") == "application/json")
                #expect(response.header("X-Auth-Subject") == nil)
            }
        }
    }

    @Test("unknown, revoked, expired and malformed keys all get the same 401 invalid_token answer")
    func indistinguishableInvalidKeys() async throws {
        let fixture = try fixture()
        let (revoked, revokedID) = try fixture.issueKey(scopes: ["ffmpeg"])
        try fixture.store.revokeKey(id: revokedID)
        let (expired, _) = try fixture.issueKey(scopes: ["ffmpeg"], expiresAt: Date().addingTimeInterval(-1))
        let unknown = "agk_" + String(repeating: "0", count: 64)
        let candidates = [unknown, revoked, expired, "agk_short", "agk_" + String(repeating: "Z", count: 64)]
        try await fixture.withLiveServer { client in
            var bodies = Set<String>()
            var challenges = Set<String>()
            for key in candidates {
                try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(key)")])) { response in
                    #expect(response.status == .unauthorized)
                    #expect(response.json["error"] as? String == "invalid_token")
                    #expect(!response.bodyText.contains(key))
                    bodies.insert(response.bodyText)
                    challenges.insert(response.header("WWW-Authenticate") ?? "")
                }
            }
            #expect(bodies.count == 1)
            #expect(challenges.count == 1)
            #expect(challenges.first?.contains("error=\"invalid_token\"") == true)
        }
    }

    @Test("a key without the route's scope gets 403 insufficient_scope naming the scope")
    func wrongScope() async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(scopes: ["memory"])
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .forbidden)
                let challenge = try #require(response.header("WWW-Authenticate"))
                #expect(challenge.contains("error=\"insufficient_scope\""))
                #expect(challenge.contains("scope=\"ffmpeg\""))
                #expect(response.json["error"] as? String == "insufficient_scope")
            }
        }
    }

    @Test("a key restricted to one route is refused on another")
    func routeRestrictedKey() async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(scopes: ["ffmpeg", "trello"], route: "trello")
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .forbidden)
                #expect(response.json["error"] as? String == "access_denied")
            }
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/trello/boards", extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .ok)
            }
        }
    }

    @Test("a revoked key stops working at once")
    func revocationIsImmediate() async throws {
        let fixture = try fixture()
        let (key, id) = try fixture.issueKey(scopes: ["ffmpeg"])
        try await fixture.withLiveServer { client in
            let headers = forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(key)")])
            try await client.execute(uri: "/auth", method: .get, headers: headers) { #expect($0.status == .ok) }
            try fixture.store.revokeKey(id: id)
            try await client.execute(uri: "/auth", method: .get, headers: headers) { #expect($0.status == .unauthorized) }
        }
    }

    @Test("a path identity that differs from the key's subject is forbidden (alice's key, user_id=bob)")
    func pathIdentityMismatch() async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: ["memory"])
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/openmemory/claude/sse/bob", extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .forbidden)
                #expect(response.header("X-Auth-Subject") == nil)
            }
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/openmemory/claude/sse/alice", extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .ok)
                #expect(response.header("X-Auth-Subject") == "alice")
            }
        }
    }

    @Test("encoded traversal in a captured segment is refused before authentication", arguments: [
        "/openmemory/claude/sse/alice%2F..%2Fbob", "/openmemory/claude/sse/%2e%2e", "/openmemory/claude/sse/alice%00", "/openmemory/cl%5Caude/sse/alice",
    ])
    func encodedTraversalInCapture(_ uri: String) async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: ["memory"])
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: uri, extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .badRequest)
                #expect(response.json["error"] as? String == "invalid_request")
            }
        }
    }

    @Test("path identity alone is accepted only from the route's listed networks")
    func pathContextAlone() async throws {
        let fixture = try fixture()
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/internal/claude/sse/carol", client: "10.1.2.3")) { response in
                #expect(response.status == .ok)
                #expect(response.header("X-Auth-Subject") == "carol")
                #expect(response.header("X-Auth-Method") == "path")
                #expect(response.header("X-Auth-Client") == "claude")
            }
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/internal/claude/sse/carol", client: "203.0.113.9")) { response in
                #expect(response.status == .unauthorized)
            }
        }
    }

    @Test("a request from a peer that is not a trusted proxy is denied even with a valid key")
    func untrustedPeerDenied() async throws {
        let fixture = try fixture(trustedProxies: "[10.0.0.0/8]")
        let (key, _) = try fixture.issueKey(scopes: ["ffmpeg"])
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .forbidden)
                #expect(response.header("X-Auth-Subject") == nil)
            }
        }
    }

    @Test("missing or duplicated forwarded metadata is denied even with a valid key")
    func brokenForwardedMetadata() async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(scopes: ["ffmpeg"])
        var missing = forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(key)")])
        missing[HTTPField.Name("X-Forwarded-Uri")!] = nil
        var duplicated = forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(key)")])
        duplicated.append(HTTPField(name: HTTPField.Name("X-Forwarded-Uri")!, value: "/public"))
        let broken = [missing, duplicated]
        try await fixture.withLiveServer { client in
            for headers in broken {
                try await client.execute(uri: "/auth", method: .get, headers: headers) { response in
                    #expect(response.status == .badRequest)
                    #expect(response.header("X-Auth-Subject") == nil)
                }
            }
        }
    }

    @Test("a request no route matches is denied, whatever the credential", arguments: [
        ("GET", "mcp.example.com", "/unknown/x"), ("GET", "other.example.com", "/ffmpeg/x"), ("POST", "mcp.example.com", "/admin/x"),
    ])
    func noRoute(_ testCase: (String, String, String)) async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(subject: "root", scopes: ["ffmpeg"])
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(method: testCase.0, host: testCase.1, uri: testCase.2, extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .forbidden)
                #expect(response.header("X-Auth-Subject") == nil)
            }
        }
    }

    @Test("subject and source network requirements are enforced")
    func subjectAndNetworkRequirements() async throws {
        let fixture = try fixture()
        let (rootKey, _) = try fixture.issueKey(subject: "root", scopes: [])
        let (aliceKey, _) = try fixture.issueKey(subject: "alice", scopes: [])
        try await fixture.withLiveServer { client in
            let cases: [(String, String, HTTPResponse.Status)] = [(rootKey, "203.0.113.7", .ok), (aliceKey, "203.0.113.7", .forbidden), (rootKey, "198.51.100.1", .forbidden)]
            for (key, source, expected) in cases {
                try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/admin/x", client: source, extra: [("Authorization", "Bearer \(key)")])) { response in
                    #expect(response.status == expected)
                }
            }
        }
    }

    @Test("a credential-style backend gets its own secret in place of the client's key")
    func credentialStyleSwap() async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(scopes: ["trello"])
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/trello/boards", extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .ok)
                #expect(response.header("Authorization") == "Bearer trello-secret")
                #expect(response.header("X-Auth-Route") == "trello")
                #expect(!response.headers.contains { $0.value.contains(key) })
            }
        }
    }

    @Test("a credential-style route whose secret is not configured fails closed with 503")
    func credentialStyleWithoutSecret() async throws {
        let fixture = try fixture(environment: [:])
        let (key, _) = try fixture.issueKey(scopes: ["trello"])
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/trello/boards", extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.header("Authorization") == nil)
                #expect(response.json["error"] as? String == "temporarily_unavailable")
            }
        }
    }

    @Test("the decision comes from the forwarded method and URI, not from the auth request's own")
    func decidesOnForwardedRequest() async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(subject: "root", scopes: [])
        try await fixture.withLiveServer { client in
            // The admin route allows only GET; Traefik calls /auth with GET but forwards the client's POST.
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(method: "POST", uri: "/admin/x", extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .forbidden)
            }
            try await client.execute(uri: "/auth", method: .post, headers: forwardedHeaders(method: "GET", uri: "/admin/x", extra: [("Authorization", "Bearer \(key)")])) { response in
                #expect(response.status == .ok)
            }
        }
    }
}
