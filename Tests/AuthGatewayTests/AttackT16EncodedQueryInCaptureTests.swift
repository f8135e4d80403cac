import AuthGateway
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

/// Attack table T16 (SECURITY.md), the `%3F` and `%23` part: an encoded `?` or `#` in a captured `{user_id}`
/// segment. A gateway that decoded it and then cut the path at the `?` or `#` would bind only what comes before
/// (`alice`) while the backend reads the whole segment as another stream. The capture must be refused, or bound
/// byte for byte as the decoded value; it is never taken for another subject.
@Suite("T16: encoded ? and # in a captured segment")
struct AttackT16EncodedQueryInCaptureTests {
    static let segments = ["alice%3F", "alice%3f", "alice%3Fx", "alice%3F..%2Fbob", "alice%23", "alice%23x", "%3Falice", "%23alice",
                           "bob%3Falice", "bob%23alice", "alice%253F", "alice%2523"]

    func fixture() throws -> GatewayFixture {
        try GatewayFixture(policy: testPolicy(routes: seedRoutes), environment: ["TRELLO_TOKEN": "trello-secret"])
    }

    @Test("T16: %3F or %23 in the bound user_id is refused for the subject before it (api_key, bind user_id: subject)", arguments: segments)
    func t16BoundCaptureIsRefused(_ segment: String) async throws {
        let fixture = try fixture()
        let (alice, _) = try fixture.issueKey(subject: "alice", scopes: ["memory"])
        let (bob, _) = try fixture.issueKey(subject: "bob", scopes: ["memory"])
        try await fixture.withLiveServer { client in
            for key in [alice, bob] {
                let headers = forwardedHeaders(uri: "/openmemory/claude/sse/\(segment)", extra: [("Authorization", "Bearer \(key)")])
                try await client.execute(uri: "/auth", method: .get, headers: headers) { response in
                    #expect([.badRequest, .forbidden].contains(response.status), "\(segment): \(response.status)")
                    #expect(response.header("X-Auth-Subject") == nil)
                }
            }
            // Control: the plain segment is alice's own stream.
            let headers = forwardedHeaders(uri: "/openmemory/claude/sse/alice", extra: [("Authorization", "Bearer \(alice)")])
            try await client.execute(uri: "/auth", method: .get, headers: headers) { response in
                #expect(response.status == .ok)
                #expect(response.header("X-Auth-Subject") == "alice")
            }
        }
    }

    @Test("T16: %3F or %23 in a path_context user_id is refused or becomes exactly the decoded segment, never the name before it", arguments: segments)
    func t16PathContextCaptureIsRefusedOrExact(_ segment: String) async throws {
        let fixture = try fixture()
        try await fixture.withLiveServer { client in
            let headers = forwardedHeaders(uri: "/internal/claude/sse/\(segment)", client: "10.1.2.3")
            try await client.execute(uri: "/auth", method: .get, headers: headers) { response in
                if response.status == .ok {
                    let decoded = segment.removingPercentEncoding
                    #expect(response.header("X-Auth-Subject") == decoded, "\(segment) allowed as \(response.header("X-Auth-Subject") ?? "nil")")
                } else {
                    #expect([.badRequest, .unauthorized, .forbidden].contains(response.status), "\(segment): \(response.status)")
                    #expect(response.header("X-Auth-Subject") == nil)
                }
            }
        }
    }
}
