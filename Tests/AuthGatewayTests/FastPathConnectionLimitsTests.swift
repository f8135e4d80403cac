@testable import AuthGateway
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOEmbedded
import Testing

/// Issue 11: what one connection can make the decision path hold or keep (findings B, C and 8).
@Suite("Fast decision path connection limits")
struct FastPathConnectionLimitsTests {
    let fixture: GatewayFixture

    init() throws {
        fixture = try GatewayFixture(policy: testPolicy(routes: seedRoutes))
    }

    static let decisionRequest = Array(
        "GET /auth HTTP/1.1\r\nHost: gateway\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: mcp.example.com\r\nX-Forwarded-Uri: /ffmpeg/x\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"
            .utf8)

    /// The byte handler alone on an embedded channel, with decisions run on the embedded loop.
    func embeddedByteHandler() throws -> (EmbeddedChannel, FastAuthByteHandler) {
        let channel = EmbeddedChannel()
        let handoff = channel.eventLoop.makePromise(of: FastAuthChannel.HummingbirdValue?.self)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let decisions = FastAuthDecisions(endpoint: AuthEndpoint(gateway: fixture.gateway), logger: logger)
        let handler = FastAuthByteHandler(decisions: decisions, handoff: handoff, logger: logger) { _ in
            Issue.record("the connection was handed to the HTTP codec")
        }
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()
        return (channel, handler)
    }

    @Test("finding B: a client holding back the last byte of each batch does not make the gateway keep what it sent")
    func heldBackByteKeepsBufferBounded() throws {
        let (channel, handler) = try embeddedByteHandler()
        defer { _ = try? channel.finish() }
        let batch = Array((0..<20).map { _ in Self.decisionRequest }.joined())
        var carried: [UInt8] = []
        var answers = 0
        var largest = 0
        for _ in 0..<200 {
            // Each write completes the previous batch's last request and holds back the last byte of its own.
            let bytes = carried + batch.dropLast()
            carried = [batch.last!]
            try channel.writeInbound(channel.allocator.buffer(bytes: bytes))
            channel.embeddedEventLoop.run()
            while try channel.readOutbound(as: ByteBuffer.self) != nil { answers += 1 }
            largest = max(largest, handler.bufferedCapacity)
        }
        #expect(answers == 200 * 20 - 1)
        // About 800 KiB was sent; what is kept is bounded by the head limit plus one read, not by the total.
        #expect(largest <= 4 * FastAuthRequestParser.maximumHeadLength + batch.count, "kept \(largest) bytes")
    }

    /// Sends up to 64 MiB of junk; how much went out before the gateway closed the connection.
    static func junkAccepted(by connection: RawHTTPConnection) async -> Int {
        let size = 64 * 1024 * 1024
        let chunk = [UInt8](repeating: 0x61, count: 64 * 1024)
        var sent = 0
        while sent < size, await connection.send(chunk) { sent += chunk.count }
        return sent
    }

    @Test(
        "finding C: a request asking to upgrade, or a CONNECT, is answered and then the connection closes instead of buffering what follows",
        arguments: [
            "GET /auth HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /auth HTTP/1.1\r\nHost: gateway\r\nConnection: keep-alive, upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "CONNECT mcp.example.com:443 HTTP/1.1\r\nHost: mcp.example.com:443\r\n\r\n",
        ])
    func upgradeOrConnectCloses(head: String) async throws {
        try await fixture.withGatewayServer { port in
            let connection = try RawHTTPConnection(port: port)
            await connection.send(head + String(decoding: Self.decisionRequest, as: UTF8.self))
            #expect(await connection.readAnswer() != nil, "the request itself is answered")
            let sent = await Self.junkAccepted(by: connection)
            #expect(sent < 64 * 1024 * 1024, "the gateway kept reading after an upgrade request")
        }
    }

    // MARK: Finding 8: header and idle timeouts

    /// Runs `body` with the port of the production server (`Gateway.makeApplication`) using `timeouts`.
    static func withServer(_ fixture: GatewayFixture, timeouts: ConnectionTimeouts, _ body: (Int) async throws -> Void) async throws {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let application = fixture.gateway.makeApplication(host: "127.0.0.1", port: 0, timeouts: timeouts, onServerRunning: { continuation.yield($0) })
        let server = Task { try await application.run() }
        defer { server.cancel() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CancellationError() }
        try await body(port)
    }

    /// Whether the server ends the connection (rather than the 20 s read timeout running out), and how long it took.
    static func closedBy(_ connection: RawHTTPConnection, since start: ContinuousClock.Instant) async -> Bool {
        let ended = await connection.readsEndOfStream()
        return ended && ContinuousClock.now - start < .seconds(12)
    }

    static let healthz = "GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
    static let decision = String(decoding: decisionRequest, as: UTF8.self)

    @Test(
        "finding 8: a connection that sends no whole request head within the header timeout is closed",
        arguments: [
            ("silent", "", ""), ("partial decision head", "", "GET /auth HTTP/1.1\r\nHost: gw\r\n"),
            ("partial router head", "", "GET /healthz HTTP/1.1\r\nHost: gw\r\n"),
            ("partial head after a decision", decision, "GET /auth HTTP/1.1\r\n"),
            ("partial head after a router request", healthz, "GET /auth HTTP/1.1\r\nX-A: b\r\n"),
        ])
    func headerTimeout(name: String, answered: String, partial: String) async throws {
        try await Self.withServer(fixture, timeouts: .init(header: .seconds(1), idle: .seconds(60))) { port in
            let connection = try RawHTTPConnection(port: port, readTimeoutSeconds: 20)
            if !answered.isEmpty {
                await connection.send(answered)
                #expect(await connection.readAnswer() != nil)
            }
            let start = ContinuousClock.now
            await connection.send(partial)
            #expect(await Self.closedBy(connection, since: start), "\(name)")
        }
    }

    @Test("finding 8: a head sent a byte at a time is cut off by the header timeout, although bytes keep coming")
    func slowHeadDrip() async throws {
        try await Self.withServer(fixture, timeouts: .init(header: .seconds(1), idle: .seconds(60))) { port in
            for prefix in ["", Self.healthz] {
                let connection = try RawHTTPConnection(port: port, readTimeoutSeconds: 20)
                if !prefix.isEmpty {
                    await connection.send(prefix)
                    #expect(await connection.readAnswer()?.status == 200)
                }
                let start = ContinuousClock.now
                var open = true
                for byte in Self.decisionRequest where open && ContinuousClock.now - start < .seconds(15) {
                    open = await connection.send([byte])
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(!open, "a head dripped over \(Self.decisionRequest.count / 10) s was still being read")
            }
        }
    }

    @Test("finding 8: a connection idle after its answer is closed after the idle timeout, on the fast path and after the router")
    func idleTimeout() async throws {
        try await Self.withServer(fixture, timeouts: .init(header: .seconds(60), idle: .seconds(1))) { port in
            for requests in [[Self.decision], [Self.healthz], [Self.healthz, Self.decision], [Self.decision, Self.healthz]] {
                let connection = try RawHTTPConnection(port: port, readTimeoutSeconds: 20)
                await connection.send(requests.joined())
                for _ in requests { #expect(await connection.readAnswer() != nil) }
                #expect(await Self.closedBy(connection, since: .now), "\(requests.count) requests")
            }
        }
    }

    @Test("finding 8: a connection whose answer is still pending is not closed: a slow proxied answer outlasts both timeouts")
    func busyConnectionKept() async throws {
        let router = Router()
        router.get("/u/**") { _, _ -> Response in
            try await Task.sleep(for: .seconds(4))
            return Response(status: .ok, body: .init(byteBuffer: .init(string: "late")))
        }
        let backend = try await LoopbackServer(router: router)
        defer { Task { await backend.stop() } }
        let fixture = try GatewayFixture(
            policy: testPolicy(
                routes: seedRoutes + """

                      - name: slow
                        match: { path: /slow/** }
                        accept: [api_key]
                        backend: { style: path, url: "\(backend.baseURL)", path: "/u/{subject}", idle_timeout: 10s }
                    """))
        let key = try fixture.issueKey(scopes: []).key
        // Sent in one write, so that no idle gap of the client's (a loaded test host may stall it) decides the test.
        try await Self.withServer(fixture, timeouts: .init(header: .seconds(2), idle: .seconds(1))) { port in
            let connection = try RawHTTPConnection(port: port, readTimeoutSeconds: 20)
            await connection.send(Self.decision + "GET /slow HTTP/1.1\r\nHost: mcp.example.com\r\nAuthorization: Bearer \(key)\r\n\r\n")
            #expect(await connection.readAnswer() != nil)
            let answer = await connection.readAnswer()
            #expect(answer?.status == 200)
            #expect(answer?.body == "late")
        }
    }

    @Test("finding 8: authgateway takes --header-timeout and --idle-timeout, and refuses a bad value with exit 64")
    func commandLineFlags() async throws {
        let policy = ProcessRunner.packageRoot.appendingPathComponent("policies/example.yaml").path
        let db = fixture.directory.appendingPathComponent("cli.sqlite").path
        for bad in [["--header-timeout", "soon"], ["--idle-timeout", "0s"]] {
            let result = try ProcessRunner.run("authgateway", ["--policy", policy, "--db", db, "--listen", "127.0.0.1:0"] + bad)
            #expect(result.status == 64)
            #expect(result.stderr.contains(bad[0]))
        }
        let (process, port) = try await ProcessRunner.startGateway(
            policy: policy, db: db, arguments: ["--header-timeout", "1s", "--idle-timeout", "2m"],
            log: fixture.directory.appendingPathComponent("gateway.log"))
        defer { process.terminate() }
        let connection = try RawHTTPConnection(port: port, readTimeoutSeconds: 20)
        #expect(await Self.closedBy(connection, since: .now))
    }
}
