@testable import AuthGateway
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

/// Finding 4: the message path's query is parsed once, as Starlette parses it (names and values percent-decoded,
/// `+` a space, the last value of a name wins there), and upstream gets the query the gateway checked.
@Suite("Finding 4: session_id query differential")
struct Finding4SessionQueryTests {
    /// A backend that echoes the query of each message POST, and counts them.
    final class QueryEcho: Sendable {
        let hits = ProxyEndpointTests.HitCounter()
        let server: LoopbackServer

        init() async throws {
            let router = Router()
            let hits = hits
            router.post("/u/messages/") { request, _ -> Response in
                hits.add()
                let data = try JSONSerialization.data(withJSONObject: ["query": request.uri.query ?? ""])
                return Response(status: .accepted, headers: [.contentType: "application/json"], body: .init(byteBuffer: .init(data: data)))
            }
            server = try await LoopbackServer(router: router)
        }
    }

    static func routes(_ backend: String) -> String {
        """
          - name: om
            match: { path: /om/** }
            accept: [api_key]
            backend: { style: path, url: "\(backend)", path: "/u/{client}/sse/{subject}" }
        """
    }

    static func owner(_ subject: String) -> SessionOwner {
        SessionOwner(Principal(subject: subject, method: .apiKey, scopes: [], groups: [], client: "cli", issuer: "", keyID: "", restrictedToRoute: nil))
    }

    /// Alice owns session OWN, Bob owns VICTIM, both SSE sessions announcing `/u/messages/`.
    static func bindSessions(_ fixture: GatewayFixture) {
        fixture.gateway.sessionBindings.bind(.init(route: "om", session: "OWN"), to: owner("alice"), messagePath: "/u/messages/", openStreams: 1, idleTimeout: .seconds(60))
        fixture.gateway.sessionBindings.bind(.init(route: "om", session: "VICTIM"), to: owner("bob"), messagePath: "/u/messages/", openStreams: 1, idleTimeout: .seconds(60))
    }

    @Test("finding 4: a second session_id in another spelling (or a malformed escape) is refused with 400 and never proxied", arguments: [
        "session_id=OWN&session%5Fid=VICTIM",
        "session_id=OWN&session_id=VICTIM",
        "session_id=OWN&%73ession_id=VICTIM",
        "session_id=OWN&sessionId=VICTIM",
        "session%5fid=VICTIM&session_id=OWN",
        "session_id=OWN&session_id",
        "session_id=OWN&session_id=",
        "session_id=OWN&x=%ZZ",
        "session_id=OWN&x=%FF",
    ])
    func duplicateRefused(_ query: String) async throws {
        let backend = try await QueryEcho()
        let fixture = try GatewayFixture(policy: testPolicy(routes: Self.routes(backend.server.baseURL)))
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: [])
        Self.bindSessions(fixture)
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/om/u/messages/?\(query)", method: .post, headers: [.authorization: "Bearer \(key)"], body: .init(string: "{}")) { response in
                #expect(response.status == .badRequest, "\(query)")
            }
        }
        #expect(backend.hits.value == 0, "\(query)")
        await backend.server.stop()
    }

    @Test("finding 4: upstream receives the query re-serialised from what was checked", arguments: [
        ("session%5Fid=OWN", "session_id=OWN"),
        ("session_id=O%57N&x=a+b", "session_id=OWN&x=a%20b"),
        ("&session_id=OWN&&y", "session_id=OWN&y="),
    ])
    func reserialised(_ query: String, _ forwarded: String) async throws {
        let backend = try await QueryEcho()
        let fixture = try GatewayFixture(policy: testPolicy(routes: Self.routes(backend.server.baseURL)))
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: [])
        Self.bindSessions(fixture)
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/om/u/messages/?\(query)", method: .post, headers: [.authorization: "Bearer \(key)"], body: .init(string: "{}")) { response in
                #expect(response.status == .accepted, "\(query)")
                #expect(response.json["query"] as? String == forwarded, "\(query)")
            }
        }
        await backend.server.stop()
    }

    @Test("finding 4: the decoded session id is the one checked (Bob's session in an encoded spelling is 403)")
    func encodedForeignSession() async throws {
        let backend = try await QueryEcho()
        let fixture = try GatewayFixture(policy: testPolicy(routes: Self.routes(backend.server.baseURL)))
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: [])
        Self.bindSessions(fixture)
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/om/u/messages/?session%5Fid=VICT%49M", method: .post, headers: [.authorization: "Bearer \(key)"], body: .init(string: "{}")) { response in
                #expect(response.status == .forbidden)
            }
        }
        #expect(backend.hits.value == 0)
        await backend.server.stop()
    }
}
