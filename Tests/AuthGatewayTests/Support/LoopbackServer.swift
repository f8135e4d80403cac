import Foundation
import Hummingbird
import Logging
import Synchronization

/// A Hummingbird server on 127.0.0.1 with a random port, run for the duration of a test (JWKS and the like).
final class LoopbackServer: Sendable {
    let port: Int
    private let task: Task<Void, any Error>

    init(router: Router<BasicRequestContext>) async throws {
        let (stream, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) },
            logger: Self.quietLogger)
        task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var iterator = stream.makeAsyncIterator()
        port = await iterator.next() ?? 0
    }

    static let quietLogger: Logger = {
        var logger = Logger(label: "loopback-server")
        logger.logLevel = .critical
        return logger
    }()

    var baseURL: String { "http://127.0.0.1:\(port)" }

    func stop() async {
        task.cancel()
        _ = try? await task.value
    }
}

/// A JWKS document whose content and availability a test can change, counting how often it is fetched.
final class JWKSEndpoint: Sendable {
    private let state = Mutex<(document: String, available: Bool, hits: Int)>(("{\"keys\":[]}", true, 0))

    func serve(_ document: String) { state.withLock { $0.document = document; $0.available = true } }
    func goDown() { state.withLock { $0.available = false } }
    var hits: Int { state.withLock { $0.hits } }

    func register(on router: Router<BasicRequestContext>, path: String = "/jwks.json") {
        router.get(RouterPath(path)) { _, _ -> Response in
            let (document, available) = self.state.withLock { state in
                state.hits += 1
                return (state.document, state.available)
            }
            guard available else { return Response(status: .serviceUnavailable) }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: .init(string: document)))
        }
    }
}
