import AuthGateway
import Foundation
import Testing

/// Issue 11, finding G (absolute-form targets): RFC 9112 §3.2.2 says the authority of an absolute-form target
/// (`GET http://host/path HTTP/1.1`) replaces `Host`; the gateway used `Host`, so the host it decided on was not
/// the one the request named.
@Suite("Finding G: absolute-form request targets")
struct FindingGAbsoluteFormTests {
    let fixture: GatewayFixture
    let key: String

    init() throws {
        fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes))
        key = try fixture.issueKey(subject: "alice", scopes: ["ffmpeg"]).key
    }

    func envoy(target: String, host: String) -> String {
        "GET \(target) HTTP/1.1\r\nHost: \(host)\r\nX-Forwarded-For: 203.0.113.7\r\nAuthorization: Bearer \(key)\r\n\r\n"
    }

    @Test(
        "finding G: the authority of an absolute-form target wins over Host, as an origin-form request to that host",
        arguments: [("evil.example", "mcp.example.com"), ("mcp.example.com", "evil.example"), ("MCP.example.com:80", "evil.example")])
    func authorityWins(authority: String, host: String) async throws {
        try await fixture.withGatewayServer { port in
            let absolute = try RawHTTPConnection(port: port)
            await absolute.send(envoy(target: "http://\(authority)/envoy/auth/ffmpeg/x", host: host))
            let origin = try RawHTTPConnection(port: port)
            await origin.send(envoy(target: "/envoy/auth/ffmpeg/x", host: authority))
            let (absoluteAnswer, originAnswer) = (await absolute.readAnswer(), await origin.readAnswer())
            #expect(absoluteAnswer != nil)
            #expect(absoluteAnswer?.status == originAnswer?.status, "http://\(authority)/… with Host: \(host)")
            #expect(absoluteAnswer?.header("X-Auth-Subject") == originAnswer?.header("X-Auth-Subject"))
        }
    }

    @Test(
        "finding G: an absolute-form target the gateway cannot take the authority of is refused with 400",
        arguments: [
            "http://alice@mcp.example.com/envoy/auth/ffmpeg/x", "ftp://mcp.example.com/envoy/auth/ffmpeg/x", "http:///envoy/auth/ffmpeg/x",
            "http://mcp.example.com:x/envoy/auth/ffmpeg/x",
        ])
    func malformedRefused(target: String) async throws {
        try await fixture.withGatewayServer { port in
            let connection = try RawHTTPConnection(port: port)
            await connection.send(envoy(target: target, host: "mcp.example.com"))
            #expect(await connection.readAnswer()?.status == 400, "\(target)")
        }
    }
}
