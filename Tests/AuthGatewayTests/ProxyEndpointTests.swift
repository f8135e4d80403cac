import AuthGateway
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing

/// The gateway as reverse proxy of path-style routes, over real loopback sockets, against an in-process backend.
@Suite("Path-style reverse proxy")
struct ProxyEndpointTests {
    /// A backend that echoes the path and headers it got, and counts its requests.
    final class HitCounter: Sendable {
        private let count = Mutex(0)
        func add() { count.withLock { $0 += 1 } }
        var value: Int { count.withLock { $0 } }
    }

    final class EchoBackend: Sendable {
        let hits: HitCounter
        let server: LoopbackServer

        init() async throws {
            let router = Router()
            let hits = HitCounter()
            self.hits = hits
            router.get("/u/**") { request, _ -> Response in
                hits.add()
                if request.uri.path.hasSuffix("/slowpoke") { try await Task.sleep(for: .seconds(5)) }
                var headers: [[String]] = []
                for field in request.headers { headers.append([field.name.canonicalName, field.value]) }
                let data = try JSONSerialization.data(withJSONObject: ["path": request.uri.path, "headers": headers])
                return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: .init(data: data)))
            }
            server = try await LoopbackServer(router: router)
        }
    }

    static func routes(backend: String) -> String {
        """
          - name: echo
            match: { path: /echo/** }
            accept: [api_key]
            require: { scopes: [memory] }
            backend: { style: path, url: "\(backend)", path: "/u/{client}/{subject}" }
          - name: slow
            match: { path: /slow/** }
            accept: [api_key]
            backend: { style: path, url: "\(backend)", path: "/u/{subject}/slowpoke", idle_timeout: 1s }
          - name: down
            match: { path: /down/** }
            accept: [api_key]
            backend: { style: path, url: "http://127.0.0.1:1", path: "/u/{subject}", failure_threshold: 2, cooldown: 1h, health_interval: 1h }
          - name: plain
            match: { path: /plain/** }
            accept: [api_key]
        """
    }

    @Test("upstream gets the identity in its path and the gateway's identity headers, never the client's credential")
    func identityInPath() async throws {
        let backend = try await EchoBackend()
        let fixture = try GatewayFixture(policy: testPolicy(routes: Self.routes(backend: backend.server.baseURL)))
        let (key, _) = try fixture.issueKey(subject: "alice", name: "laptop", scopes: ["memory"])
        try await fixture.withLiveServer { client in
            let headers: HTTPFields = [.authorization: "Bearer \(key)", HTTPField.Name("X-Auth-Subject")!: "mallory", .cookie: "sid=1"]
            try await client.execute(uri: "/echo", method: .get, headers: headers) { response in
                #expect(response.status == .ok)
                let echo = response.json
                #expect(echo["path"] as? String == "/u/laptop/alice")
                let seen = (echo["headers"] as? [[String]]) ?? []
                #expect(!seen.contains { ["authorization", "cookie", "x-api-key"].contains($0[0]) })
                #expect(seen.filter { $0[0] == "x-auth-subject" }.map { $0[1] } == ["alice"])
                #expect(seen.contains(["x-forwarded-prefix", "/echo"]))
            }
        }
        await backend.server.stop()
    }

    @Test("a request without a credential is 401 and never reaches the backend")
    func noCredential() async throws {
        let backend = try await EchoBackend()
        let fixture = try GatewayFixture(policy: testPolicy(routes: Self.routes(backend: backend.server.baseURL)))
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/echo", method: .get) { response in
                #expect(response.status == .unauthorized)
                #expect(response.header("WWW-Authenticate")?.hasPrefix("Bearer ") == true)
            }
        }
        #expect(backend.hits.value == 0)
        await backend.server.stop()
    }

    @Test("a path below the prefix that no stream announced is 404 and never proxied")
    func unannouncedPath() async throws {
        let backend = try await EchoBackend()
        let fixture = try GatewayFixture(policy: testPolicy(routes: Self.routes(backend: backend.server.baseURL)))
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: ["memory"])
        try await fixture.withLiveServer { client in
            for uri in ["/echo/u/laptop/bob", "/echo/u/laptop/bob?session_id=x"] {
                try await client.execute(uri: uri, method: .get, headers: [.authorization: "Bearer \(key)"]) { response in
                    #expect(response.status == .notFound, "\(uri)")
                }
            }
        }
        #expect(backend.hits.value == 0)
        await backend.server.stop()
    }

    @Test("routes of other styles are not proxied by the gateway")
    func otherStylesNotProxied() async throws {
        let fixture = try GatewayFixture(policy: testPolicy(routes: Self.routes(backend: "http://127.0.0.1:1")))
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: ["memory"])
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/plain/x", method: .get, headers: [.authorization: "Bearer \(key)"]) { response in
                #expect(response.status == .notFound)
            }
        }
    }

    @Test("a backend that does not answer within the idle timeout gives 504 with a JSON body")
    func timeout() async throws {
        let backend = try await EchoBackend()
        let fixture = try GatewayFixture(policy: testPolicy(routes: Self.routes(backend: backend.server.baseURL)))
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: ["memory"])
        try await fixture.withLiveServer { client in
            try await client.execute(uri: "/slow", method: .get, headers: [.authorization: "Bearer \(key)"]) { response in
                #expect(response.status == .gatewayTimeout)
                #expect(response.json["error"] as? String == "upstream_timeout")
            }
        }
        await backend.server.stop()
    }

    @Test("a refusing backend gives 502, then the open circuit 503, visible on /healthz/backends")
    func circuitOpens() async throws {
        let fixture = try GatewayFixture(policy: testPolicy(routes: Self.routes(backend: "http://127.0.0.1:1")))
        let (key, _) = try fixture.issueKey(subject: "alice", scopes: ["memory"])
        try await fixture.withLiveServer { client in
            var statuses: [HTTPResponse.Status] = []
            for _ in 0..<3 {
                try await client.execute(uri: "/down", method: .get, headers: [.authorization: "Bearer \(key)"]) { response in
                    statuses.append(response.status)
                    if response.status == .serviceUnavailable {
                        #expect(response.json["error"] as? String == "backend_unavailable")
                        #expect(response.header("Retry-After") != nil)
                    }
                }
            }
            #expect(statuses == [.badGateway, .badGateway, .serviceUnavailable])
            try await client.execute(uri: "/healthz/backends", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let backends = (response.json["backends"] as? [[String: Any]]) ?? []
                #expect(backends.first { $0["route"] as? String == "down" }?["state"] as? String == "open")
                #expect(!response.bodyText.contains("127.0.0.1:1"), "the health document names routes, not upstream URLs")
            }
        }
    }
}
