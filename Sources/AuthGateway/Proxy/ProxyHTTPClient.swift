import AsyncHTTPClient
import NIOCore
import Synchronization

/// The HTTP clients the proxy talks to backends with, one per idle timeout.
///
/// The idle timeout is async-http-client's read timeout (the longest silence between two reads), so a silent
/// stream is closed by the client library itself. Clients are process-wide and never shut down, like
/// `HTTPClient.shared`; a policy names only a handful of distinct timeouts.
enum ProxyHTTPClient {
    private static let clients = Mutex<[Int64: HTTPClient]>([:])

    static let connectTimeout = TimeAmount.seconds(5)

    static func client(idleTimeout: Duration) -> HTTPClient {
        let seconds = max(1, idleTimeout.components.seconds)
        return clients.withLock { clients in
            if let client = clients[seconds] { return client }
            let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration(readTimeout: .seconds(seconds)))
            clients[seconds] = client
            return client
        }
    }

    static func configuration(readTimeout: TimeAmount) -> HTTPClient.Configuration {
        // A proxy never follows redirects (the client must see them) and never decompresses (bytes pass as sent).
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow, timeout: .init(connect: connectTimeout, read: readTimeout), decompression: .disabled)
        // Every open stream holds a connection: the per-route stream limit, not the pool, bounds them.
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 4096)
        // A backend that refuses connections is down: fail at once (502) instead of retrying until the timeout.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.httpVersion = .http1Only
        return configuration
    }
}
