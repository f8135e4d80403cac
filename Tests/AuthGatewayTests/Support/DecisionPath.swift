import Foundation
import Testing

/// The two ways the production server (`Gateway.makeApplication`) decides a `/auth` request: the fast NIO handler,
/// which answers a decision request arriving first on a connection, and Hummingbird's router, which answers one
/// that queues behind an unanswered request for another endpoint. A check that must hold "on both paths" runs
/// once per case.
enum DecisionPath: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case fast
    case router

    var testDescription: String { rawValue }

    /// The forwardAuth request Traefik would send for `GET https://mcp.example.com<uri>` with `Authorization`.
    static func request(uri: String, authorization: String?) -> String {
        var lines = [
            "GET /auth HTTP/1.1", "Host: gateway", "X-Forwarded-Method: GET", "X-Forwarded-Proto: https",
            "X-Forwarded-Host: mcp.example.com", "X-Forwarded-Uri: \(uri)", "X-Forwarded-For: 203.0.113.7",
        ]
        if let authorization { lines.append("Authorization: \(authorization)") }
        return lines.joined(separator: "\r\n") + "\r\n\r\n"
    }

    /// The gateway's answer on this path to a `/auth` request carrying `Bearer <token>`, on a new connection.
    func answer(port: Int, uri: String = "/ffmpeg/x", bearer token: String) async throws -> RawHTTPConnection.Answer {
        let connection = try RawHTTPConnection(port: port)
        let decision = Self.request(uri: uri, authorization: "Bearer \(token)")
        switch self {
        case .fast:
            await connection.send(decision)
        case .router:
            await connection.send("GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n" + decision)
            let health = try #require(await connection.readAnswer(), "no answer to /healthz")
            #expect(health.status == 200)
        }
        return try #require(await connection.readAnswer(), "no answer to /auth on the \(rawValue) path")
    }
}

extension RawHTTPConnection.Answer {
    /// A 401 `invalid_token` challenge with no identity header: how every refused credential is answered.
    var isInvalidToken: Bool {
        status == 401 && header("WWW-Authenticate")?.contains(#"error="invalid_token""#) == true && header("X-Auth-Subject") == nil
    }
}
