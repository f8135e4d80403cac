import AsyncHTTPClient
import AuthGateway
import Foundation
import HummingbirdTesting
import NIOHTTP1
import Testing

/// Envoy's ext_authz HTTP service sends the original method, path (after `path_prefix`) and authority.
@Suite("Envoy ext_authz endpoint")
struct EnvoyAuthEndpointTests {
    func ask(port: Int, method: HTTPMethod, path: String, headers: [(String, String)]) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        request.headers.add(contentsOf: headers)
        return try await HTTPClient.shared.execute(request, timeout: .seconds(10))
    }

    @Test("the original method, path and authority decide, not forwarded headers the client made up")
    func decidesOnOriginalRequest() async throws {
        let fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes), environment: ["TRELLO_TOKEN": "t"])
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: ["ffmpeg"])
        try await fixture.withLiveServer { client in
            let port = try #require(client.port)
            let allowed = try await ask(port: port, method: .POST, path: "/envoy/auth/ffmpeg/v1/tools?x=1", headers: [("Host", "mcp.example.com"), ("X-Forwarded-For", "203.0.113.9"), ("Authorization", "Bearer \(key)")])
            #expect(allowed.status == .ok)
            #expect(allowed.headers.first(name: "X-Auth-Subject") == "alice")
            #expect(allowed.headers.first(name: "X-Auth-Route") == "ffmpeg")

            let spoofed = try await ask(port: port, method: .GET, path: "/envoy/auth/trello/boards", headers: [("Host", "mcp.example.com"), ("X-Forwarded-For", "203.0.113.9"), ("Authorization", "Bearer \(key)"), ("X-Forwarded-Uri", "/ffmpeg/ok")])
            #expect(spoofed.status == .forbidden, "the trello route needs scope trello; the made-up URI must not count")
            #expect(spoofed.headers.first(name: "WWW-Authenticate")?.contains("insufficient_scope") == true)

            let withoutClientAddress = try await ask(port: port, method: .GET, path: "/envoy/auth/ffmpeg/x", headers: [("Host", "mcp.example.com"), ("Authorization", "Bearer \(key)")])
            #expect(withoutClientAddress.status == .badRequest, "without x-forwarded-for the client address is unknown")

            let anonymous = try await ask(port: port, method: .GET, path: "/envoy/auth/ffmpeg/x", headers: [("Host", "mcp.example.com"), ("X-Forwarded-For", "203.0.113.9")])
            #expect(anonymous.status == .unauthorized)
            #expect(anonymous.headers.first(name: "WWW-Authenticate")?.contains("resource_metadata=") == true)
        }
    }
}
