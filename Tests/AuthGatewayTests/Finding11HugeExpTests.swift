import AuthGateway
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// Issue 11, finding 11: a trusted issuer's token with an enormous `exp` used to overflow the verified-token cache's
/// lifetime (`Int64(remaining * 1000)`) and trap, taking the gateway down. Since T25 (issue 12) such a token is
/// refused for its lifetime (over `max_token_lifetime`), but only after its signature was verified and cached, so
/// the cache still meets the enormous `exp`.
@Suite("Finding 11: enormous exp")
struct Finding11HugeExpTests {
    static let issuer = try! TestIssuer()

    @Test("finding 11: a token with exp = 1e18 is answered (401, over max_token_lifetime), twice (the second from the cache), and the gateway lives", arguments: [1e18, 1e300])
    func enormousExp(exp: Double) async throws {
        let endpoint = JWKSEndpoint()
        endpoint.serve(Self.issuer.jwks())
        let router = Router<BasicRequestContext>()
        endpoint.register(on: router)
        let server = try await LoopbackServer(router: router)
        defer { Task { await server.stop() } }
        let fixture = try GatewayFixture(
            policy: testPolicy(
                issuers: """
                    issuers:
                      corp:
                        issuer: \(Self.issuer.issuer)
                        jwks_url: \(server.baseURL)/jwks.json
                        algorithms: [ES256]

                    """,
                routes: """
                      - name: ffmpeg
                        match: { host: mcp.example.com, path: "/ffmpeg/**" }
                        accept: [jwt]
                        require: { scopes: [ffmpeg] }

                    """))
        let token = try Self.issuer.es256(Self.issuer.claims(["exp": exp]))
        try await fixture.withLiveServer { client in
            for _ in 0..<2 {
                let response = try await client.execute(
                    uri: "/auth", method: .get, headers: forwardedHeaders(uri: "/ffmpeg/x", extra: [("Authorization", "Bearer \(token)")]))
                #expect(response.status == .unauthorized)
                #expect(response.header("X-Auth-Subject") == nil)
            }
        }
    }
}
