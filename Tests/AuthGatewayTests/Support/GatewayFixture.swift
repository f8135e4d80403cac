import AuthGateway
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import TokenStore

/// A gateway on a fresh SQLite store in a temporary directory, loaded from policy YAML written in the test.
struct GatewayFixture {
    let directory: URL
    let store: TokenStore
    let gateway: Gateway

    init(policy yaml: String, environment: [String: String] = [:]) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("authgateway-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        store = try TokenStore(path: directory.appendingPathComponent("store.sqlite").path)
        let loaded = try PolicyLoader.load(yaml: yaml, file: "test-policy.yaml", environment: environment)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        gateway = Gateway(policy: loaded.policy, store: store, logger: logger)
    }

    /// Issues a key and returns its plaintext and id.
    func issueKey(
        subject: String = "alice", name: String = "cli", scopes: [String], route: String? = nil, expiresAt: Date? = nil
    ) throws -> (key: String, id: String) {
        let (record, secret) = try store.issueKey(
            APIKeyRequest(subject: subject, name: name, scopes: scopes, route: route, expiresAt: expiresAt))
        return (secret.plaintext, record.id)
    }

    /// Runs `body` against the gateway listening on a real loopback socket, so the peer address is 127.0.0.1.
    func withLiveServer(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let app = Application(
            router: gateway.makeRouter(), server: gateway.httpServer, configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: LoopbackServer.quietLogger)
        try await app.test(.live) { client in try await body(client) }
    }

    /// Runs `body` with the port of the gateway's production server (`Gateway.makeApplication`) on 127.0.0.1.
    func withGatewayServer(_ body: (Int) async throws -> Void) async throws {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let application = gateway.makeApplication(host: "127.0.0.1", port: 0, onServerRunning: { continuation.yield($0) })
        let server = Task { try await application.run() }
        defer { server.cancel() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CancellationError() }
        try await body(port)
    }
}

/// The headers Traefik sends to forwardAuth for a request, plus any extra client headers.
func forwardedHeaders(
    method: String = "GET", proto: String = "https", host: String = "mcp.example.com", uri: String,
    client: String = "203.0.113.7", extra: [(String, String)] = []
) -> HTTPFields {
    var fields = HTTPFields()
    fields.append(HTTPField(name: HTTPField.Name("X-Forwarded-Method")!, value: method))
    fields.append(HTTPField(name: HTTPField.Name("X-Forwarded-Proto")!, value: proto))
    fields.append(HTTPField(name: HTTPField.Name("X-Forwarded-Host")!, value: host))
    fields.append(HTTPField(name: HTTPField.Name("X-Forwarded-Uri")!, value: uri))
    fields.append(HTTPField(name: HTTPField.Name("X-Forwarded-For")!, value: client))
    for (name, value) in extra { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
    return fields
}

extension TestResponse {
    var bodyText: String { String(buffer: body) }

    func header(_ name: String) -> String? { headers[HTTPField.Name(name)!] }

    /// The decoded JSON body.
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(bodyText.utf8)) as? [String: Any]) ?? [:] }
}

/// A policy like the example's, on loopback, with a place for extra issuers and routes.
func testPolicy(trustedProxies: String = "[127.0.0.1/32, \"::1/128\"]", issuers: String = "", routes: String) -> String {
    """
    gateway:
      public_url: https://mcp.example.com
      realm: mcp
      trusted_proxies: \(trustedProxies)
    \(issuers)
    routes:
    \(routes)
    """
}

/// The seed routes used by most HTTP-level tests.
let seedRoutes = """
      - name: openmemory
        match: { host: mcp.example.com, path: "/openmemory/{client_name}/sse/{user_id}" }
        resource: https://mcp.example.com/openmemory
        accept: [api_key]
        require: { scopes: [memory], bind: { user_id: subject } }
      - name: internal-memory
        match: { host: mcp.example.com, path: "/internal/{client_name}/sse/{user_id}" }
        accept: [api_key, path_context]
        path_context: { networks: [10.0.0.0/8], subject: user_id, client: client_name }
      - name: ffmpeg
        match: { host: mcp.example.com, path: "/ffmpeg/**" }
        accept: [api_key]
        require: { scopes: [ffmpeg] }
      - name: admin
        match: { host: mcp.example.com, path: "/admin/**", methods: [GET] }
        accept: [api_key]
        require: { subjects: [root], networks: [203.0.113.0/24] }
      - name: trello
        match: { host: mcp.example.com, path: "/trello/**" }
        accept: [api_key]
        require: { scopes: [trello] }
        backend: { style: credential, header: Authorization, prefix: "Bearer ", value_env: TRELLO_TOKEN }
    """
