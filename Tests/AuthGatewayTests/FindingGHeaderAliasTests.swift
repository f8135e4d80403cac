import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

/// Finding G (header aliases): in forwardAuth mode the gateway cannot strip request headers, and Traefik without
/// `aliasHeadersStrategy` passes `X_Auth_Subject` both to `/auth` and to the backend, which may fold it onto
/// `X-Auth-Subject`. So `/auth` refuses a request carrying a header that normalises (case, `_` and `.` read as `-`)
/// onto a configured identity header name.
@Suite("Finding G: identity header aliases on /auth")
struct FindingGHeaderAliasTests {
    func fixture() throws -> GatewayFixture {
        try GatewayFixture(policy: testPolicy(routes: seedRoutes))
    }

    @Test("finding G: a header aliasing an identity header is refused with 400", arguments: [
        "X_Auth_Subject", "X.Auth.Subject", "X-Auth_Subject", "x_auth-scopes", "X-AUTH.ROUTE", "X_Auth_Key_Id",
    ])
    func aliasRefused(_ name: String) async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: ["ffmpeg"])
        try await fixture.withLiveServer { client in
            let extra = [(name, "mallory"), ("Authorization", "Bearer \(key)")]
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x", extra: extra)) { response in
                #expect(response.status == .badRequest, "\(name)")
                #expect(response.header("X-Auth-Subject") == nil, "\(name)")
            }
        }
    }

    @Test("finding G: other names with '_' or '.' and the exact identity names are still decided as before", arguments: [
        "X_Request_Id", "X.Trace", "X-Auth-Subject", "X_Auth_Subjects",
    ])
    func othersAllowed(_ name: String) async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: ["ffmpeg"])
        try await fixture.withLiveServer { client in
            let extra = [(name, "mallory"), ("Authorization", "Bearer \(key)")]
            try await client.execute(uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x", extra: extra)) { response in
                #expect(response.status == .ok, "\(name)")
                #expect(response.header("X-Auth-Subject") == "alice")
            }
        }
    }

    @Test("finding G: the fast decision path refuses the alias too")
    func fastPath() async throws {
        let fixture = try fixture()
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: ["ffmpeg"])
        try await fixture.withGatewayServer { port in
            let connection = try RawHTTPConnection(port: port)
            var request = "GET /auth HTTP/1.1\r\nHost: gw\r\n"
            for field in forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(key)"), ("X_Auth_Subject", "mallory")]) {
                request += "\(field.name.rawName): \(field.value)\r\n"
            }
            await connection.send(request + "\r\n")
            #expect(await connection.readAnswer()?.status == 400)
        }
    }
}
