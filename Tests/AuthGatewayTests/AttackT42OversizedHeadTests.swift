import AuthGateway
import Foundation
import Testing

/// Attack table T42 (SECURITY.md), the part the fast path hands on: a request head to `/auth` too large for any
/// decision goes to SwiftNIO's HTTP/1 codec, which must answer it with an error (431 or 400) and close the
/// connection, while the gateway keeps serving everyone else.
@Suite("T42: oversized request heads")
struct AttackT42OversizedHeadTests {
    let fixture: GatewayFixture
    let key: String

    init() throws {
        fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes), environment: ["TRELLO_TOKEN": "trello-secret"])
        key = try fixture.issueKey(subject: "alice", scopes: ["ffmpeg"]).key
    }

    /// A decision request for `/ffmpeg/x` with a valid key, and `padding` header lines before the blank line.
    func request(padding: [String] = []) -> String {
        let lines = [
            "GET /auth HTTP/1.1", "Host: gateway", "X-Forwarded-Method: GET", "X-Forwarded-Proto: https",
            "X-Forwarded-Host: mcp.example.com", "X-Forwarded-Uri: /ffmpeg/x", "X-Forwarded-For: 203.0.113.7",
            "Authorization: Bearer \(key)",
        ]
        return (lines + padding).joined(separator: "\r\n") + "\r\n\r\n"
    }

    enum Oversize: String, CaseIterable, Sendable, CustomTestStringConvertible {
        var testDescription: String { rawValue }

        case manyFields = "100 KiB in 100 header fields of 1 KiB"
        case oneField = "100 KiB in one header field"
        case longTarget = "a 100 KiB request target"

        var padding: [String] {
            switch self {
            case .manyFields: (0..<100).map { "X-Pad-\($0): " + String(repeating: "a", count: 1024) }
            case .oneField: ["X-Pad: " + String(repeating: "a", count: 100 * 1024)]
            case .longTarget: []
            }
        }
    }

    @Test("T42: an oversized request head to /auth gets 431 or 400 from the HTTP codec, the connection closes, and the gateway stays alive",
          arguments: Oversize.allCases)
    func t42OversizedHeadIsAnsweredAndClosed(_ oversize: Oversize) async throws {
        try await fixture.withGatewayServer { port in
            var bytes = request(padding: oversize.padding)
            if oversize == .longTarget {
                bytes = bytes.replacingOccurrences(of: "GET /auth HTTP/1.1", with: "GET /auth?" + String(repeating: "a", count: 100 * 1024) + " HTTP/1.1")
            }
            #expect(bytes.utf8.count > 100 * 1024)
            let connection = try RawHTTPConnection(port: port)
            await connection.send(bytes)
            let answer = await connection.readAnswer()
            #expect(answer?.status == 431 || answer?.status == 400, "answer: \(String(describing: answer?.statusLine))")
            #expect(answer?.header("X-Auth-Subject") == nil)
            #expect(answer?.header("Connection")?.lowercased() == "close")
            #expect(await connection.readsEndOfStream())

            // The gateway is alive: a fresh connection is decided as usual, and so is the health check.
            let next = try RawHTTPConnection(port: port)
            await next.send(request() + "GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
            let decided = await next.readAnswer()
            #expect(decided?.status == 200)
            #expect(decided?.header("X-Auth-Subject") == "alice")
            #expect(await next.readAnswer()?.status == 200)
        }
    }
}
