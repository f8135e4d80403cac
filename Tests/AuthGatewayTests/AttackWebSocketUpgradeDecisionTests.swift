import AuthGateway
import Foundation
import Testing

/// The WebSocket transport (issue 12): a decision request that still carries the client's `Connection: Upgrade` and
/// `Upgrade: websocket` (a proxy that does not drop hop-by-hop headers before calling `/auth`) is decided like any
/// other request. The fast parser hands such requests to SwiftNIO and Hummingbird, which must not answer `101`,
/// skip the decision or allow without a credential. The e2e suite checks the upgrade itself through real Traefik
/// (`e2e/test_attacks_boundary.py`).
@Suite("WebSocket upgrade headers on a decision request")
struct AttackWebSocketUpgradeDecisionTests {
    static let upgradeHeaders: [[String]] = [
        ["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"],
        ["Connection: keep-alive, Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13"],
        ["Upgrade: websocket"],
        ["Connection: upgrade"],
        ["Connection: Upgrade", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"],
    ]

    let fixture: GatewayFixture
    let key: String

    init() throws {
        fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes), environment: ["TRELLO_TOKEN": "trello-secret"])
        key = try fixture.issueKey(subject: "alice", scopes: ["ffmpeg"]).key
    }

    func decisionRequest(credential: String?, extra: [String]) -> String {
        var lines = [
            "GET /auth HTTP/1.1", "Host: gateway", "X-Forwarded-Method: GET", "X-Forwarded-Proto: https",
            "X-Forwarded-Host: mcp.example.com", "X-Forwarded-Uri: /ffmpeg/ws", "X-Forwarded-For: 203.0.113.7",
        ]
        if let credential { lines.append("Authorization: Bearer \(credential)") }
        return (lines + extra).joined(separator: "\r\n") + "\r\n\r\n"
    }

    @Test("a decision request carrying upgrade headers is decided like any other: 401 without a valid key, 200 with one, never 101",
          arguments: upgradeHeaders)
    func upgradeHeadersDoNotChangeTheDecision(_ extra: [String]) async throws {
        try await fixture.withGatewayServer { port in
            let cases: [(credential: String?, status: Int)] = [(nil, 401), ("agk_" + String(repeating: "0", count: 64), 401), (key, 200)]
            for (credential, status) in cases {
                // On a connection of its own (the fast path's first look), and behind a router request.
                for prelude in ["", "GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"] {
                    let connection = try RawHTTPConnection(port: port)
                    await connection.send(prelude + decisionRequest(credential: credential, extra: extra))
                    if !prelude.isEmpty { _ = await connection.readAnswer() }
                    let answer = await connection.readAnswer()
                    let what = "\(extra) credential: \(credential == nil ? "none" : credential == key ? "valid" : "unknown") prelude: \(!prelude.isEmpty)"
                    #expect(answer?.status == status, "\(what): \(answer?.statusLine ?? "no answer")")
                    #expect(answer?.header("X-Auth-Subject") == (status == 200 ? "alice" : nil), "\(what)")
                    #expect(answer?.header("Upgrade") == nil && answer?.header("Sec-WebSocket-Accept") == nil, "\(what)")
                }
            }
        }
    }
}
