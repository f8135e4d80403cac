@testable import AuthGateway
import Foundation
import HTTPTypes
import NIOHTTP1
import Testing

/// Attack table T2 (SECURITY.md): a client sends `X-Forwarded-Prefix: /admin` before a proxy with a stripPrefix
/// middleware (Traefik GHSA-6384-m2mw-rf54). The gateway decides on `X-Forwarded-Host`/`-Uri` only, so at `/auth`
/// the header, in any spelling, changes nothing; in the gateway's own proxy mode it never reaches the backend,
/// which gets the gateway's prefix only. The Traefik side (forwardAuth before stripPrefix) is in the e2e suite:
/// `e2e/test_attacks_boundary.py` `test_t2_…`.
@Suite("T2: injected X-Forwarded-Prefix")
struct AttackT2ForwardedPrefixTests {
    static let injections: [[String]] = [
        ["X-Forwarded-Prefix: /admin"], ["x-forwarded-prefix: /admin"], ["X_Forwarded_Prefix: /admin"], ["X.Forwarded.Prefix: /admin"],
        ["X-Forwarded-Prefix: /ffmpeg"], ["X-Forwarded-Prefix: /admin/"], ["X-Forwarded-Prefix: /ffmpeg/../admin"],
        ["X-Forwarded-Prefix: http://evil.example/admin"], ["X-Forwarded-Prefix: /admin", "X-Forwarded-Prefix: /ffmpeg"],
        ["X-Forwarded-Prefix: /admin, /ffmpeg"], ["X-Forwarded-Prefix:"],
    ]

    let fixture: GatewayFixture
    let ffmpegKey: String

    init() throws {
        fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes), environment: ["TRELLO_TOKEN": "trello-secret"])
        ffmpegKey = try fixture.issueKey(subject: "alice", scopes: ["ffmpeg"]).key
    }

    func decisionRequest(uri: String, credential: Bool, extra: [String]) -> String {
        var lines = [
            "GET /auth HTTP/1.1", "Host: gateway", "X-Forwarded-Method: GET", "X-Forwarded-Proto: https",
            "X-Forwarded-Host: mcp.example.com", "X-Forwarded-Uri: \(uri)", "X-Forwarded-For: 203.0.113.7",
        ]
        if credential { lines.append("Authorization: Bearer \(ffmpegKey)") }
        return (lines + extra).joined(separator: "\r\n") + "\r\n\r\n"
    }

    /// Status and route of the answer on the fast path and through the router (queued behind a router request).
    func decide(_ request: String, port: Int) async throws -> [(status: Int?, route: String?)] {
        let fast = try RawHTTPConnection(port: port)
        await fast.send(request)
        let fastAnswer = await fast.readAnswer()
        let routed = try RawHTTPConnection(port: port)
        await routed.send("GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n" + request)
        _ = await routed.readAnswer()
        let routedAnswer = await routed.readAnswer()
        return [fastAnswer, routedAnswer].map { ($0?.status, $0?.header("X-Auth-Route")) }
    }

    @Test("T2: an injected X-Forwarded-Prefix in any spelling does not change the decision at /auth", arguments: injections)
    func t2PrefixDoesNotChangeTheDecision(_ extra: [String]) async throws {
        try await fixture.withGatewayServer { port in
            // (uri, credential) → the answer without any prefix header: the ffmpeg key opens /ffmpeg, not /admin.
            let cases: [(uri: String, credential: Bool, status: Int, route: String?)] = [
                ("/ffmpeg/x", true, 200, "ffmpeg"), ("/ffmpeg/x", false, 401, nil), ("/admin/x", true, 403, nil), ("/x", true, 403, nil),
            ]
            for entry in cases {
                for answer in try await decide(decisionRequest(uri: entry.uri, credential: entry.credential, extra: extra), port: port) {
                    #expect(answer.status == entry.status && answer.route == entry.route, "\(extra) \(entry.uri) credential: \(entry.credential) → \(answer)")
                }
            }
        }
    }

    @Test("T2: in proxy mode the client's X-Forwarded-Prefix, in any spelling, never reaches the backend; the gateway's does",
          arguments: ["X-Forwarded-Prefix", "x-forwarded-prefix", "X_Forwarded_Prefix", "X.Forwarded.Prefix"])
    func t2ProxyModeDropsTheClientsPrefix(_ name: String) {
        var fields = HTTPFields()
        fields.append(HTTPField(name: HTTPField.Name(name)!, value: "/admin"))
        fields.append(HTTPField(name: HTTPField.Name("X-Forwarded-Prefix")!, value: "/admin"))
        let gateway = GatewaySettings(
            publicURL: "https://mcp.example.com", realm: "mcp", trustedProxies: [], identityHeaders: IdentityHeaderNames(), apiKeyHeader: "X-API-Key")
        let upstream = ProxyHeaders(gateway: gateway).upstream(
            from: fields, identity: [], clientAddress: IPAddress("203.0.113.7"), publicHost: "mcp.example.com", proto: "https", prefix: "/om")
        #expect(upstream["X-Forwarded-Prefix"] == ["/om"])
        #expect(!upstream.contains { $0.value == "/admin" }, "\(upstream)")
    }

    @Test("T2: in proxy mode a dotted alias of a protected name never goes upstream (PHP and CGI read '.' as '-')",
          arguments: ["X.Forwarded.Prefix", "X.Forwarded.For", "X.Forwarded.Host", "Mcp.Session.Id", "X.API.Key", "X.Original.URL", "Authorization."])
    func t2ProxyModeDropsDottedAliases(_ name: String) {
        var fields = HTTPFields()
        fields.append(HTTPField(name: HTTPField.Name(name)!, value: "mallory"))
        fields.append(HTTPField(name: .accept, value: "text/event-stream"))
        let gateway = GatewaySettings(
            publicURL: "https://mcp.example.com", realm: "mcp", trustedProxies: [], identityHeaders: IdentityHeaderNames(), apiKeyHeader: "X-API-Key")
        let upstream = ProxyHeaders(gateway: gateway).upstream(
            from: fields, identity: [], clientAddress: IPAddress("203.0.113.7"), publicHost: "mcp.example.com", proto: "https", prefix: "/om")
        #expect(!upstream.contains { $0.value == "mallory" }, "\(name): \(upstream)")
        #expect(upstream["Accept"] == ["text/event-stream"])
    }
}
