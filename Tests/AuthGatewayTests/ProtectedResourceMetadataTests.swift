import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

@Suite("Protected resource metadata (RFC 9728)")
struct ProtectedResourceMetadataTests {
    static let policy = testPolicy(
        issuers: """
            issuers:
              corp: { issuer: "https://sso.example.com/realms/mcp", jwks_url: "http://127.0.0.1:9/jwks" }
            """,
        routes: """
              - name: ffmpeg
                match: { host: mcp.example.com, path: "/ffmpeg/**" }
                accept: [jwt, api_key]
                require: { scopes: [ffmpeg] }
              - name: keys-only
                match: { host: mcp.example.com, path: "/keys/**" }
                accept: [api_key]
            """)

    @Test("the path-inserted document describes the route's resource, without authentication and never with a 401", arguments: [
        "/.well-known/oauth-protected-resource/ffmpeg", "/.well-known/oauth-protected-resource/ffmpeg/mcp",
    ])
    func pathInsertedDocument(_ uri: String) async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        try await fixture.withLiveServer { client in
            try await client.execute(uri: uri, method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.json["resource"] as? String == "https://mcp.example.com/ffmpeg")
                #expect(response.json["authorization_servers"] as? [String] == ["https://sso.example.com/realms/mcp"])
                #expect(response.json["scopes_supported"] as? [String] == ["ffmpeg"])
                #expect(response.json["bearer_methods_supported"] as? [String] == ["header"])
                #expect(response.header("Access-Control-Allow-Origin") == "*")
                #expect(response.header("Cache-Control")?.contains("max-age") == true)
            }
        }
    }

    @Test("the resource in the metadata is the audience the JWT check requires and the 401 points at it")
    func metadataMatchesChallenge() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        try await fixture.withLiveServer { client in
            let challenge = try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/mcp")) { $0.header("WWW-Authenticate") }
            let url = try #require(challenge?.split(separator: "\"").drop { !$0.hasSuffix("resource_metadata=") }.dropFirst().first)
            let path = String(url.dropFirst("https://mcp.example.com".count))
            try await client.execute(uri: path, method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.json["resource"] as? String == fixture.gateway.engine.policy.routes[0].resource)
            }
        }
    }

    @Test("a resource without OAuth lists no authorization server; unknown paths and the bare root are 404, not 401", arguments: [
        ("/.well-known/oauth-protected-resource/keys", 200), ("/.well-known/oauth-protected-resource/nothing", 404), ("/.well-known/oauth-protected-resource", 404),
    ])
    func otherDocuments(_ testCase: (String, Int)) async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        try await fixture.withLiveServer { client in
            try await client.execute(uri: testCase.0, method: .get) { response in
                #expect(Int(response.status.code) == testCase.1)
                if testCase.1 == 200 { #expect(response.json["authorization_servers"] == nil) }
            }
        }
    }

    @Test("CORS preflight on the metadata is answered for browser-based clients")
    func corsPreflight() async throws {
        let fixture = try GatewayFixture(policy: Self.policy)
        try await fixture.withLiveServer { client in
            let headers: HTTPFields = [.origin: "http://localhost:6274", .accessControlRequestMethod: "GET"]
            try await client.execute(uri: "/.well-known/oauth-protected-resource/ffmpeg", method: .options, headers: headers) { response in
                #expect(response.status == .noContent)
                #expect(response.header("Access-Control-Allow-Origin") == "*")
                #expect(response.header("Access-Control-Allow-Methods")?.contains("GET") == true)
            }
        }
    }
}
