@testable import AuthGateway
import Foundation
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
}
