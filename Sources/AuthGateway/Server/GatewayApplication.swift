import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// The gateway's HTTP service: `GatewayHTTPServer` on its address with the router behind it, and the gateway's
/// background services, run together in one service group.
///
/// It stands in for Hummingbird's `Application`, whose server would put an async task on every connection; requests
/// that reach the router are answered exactly as `Application` answers them (request id in the logger, 500 for an
/// unexpected error, `Date` header).
public struct GatewayApplication: Service {
    let server: GatewayHTTPServer
    let services: [any Service]
    let logger: Logger

    init(
        router: Router<GatewayRequestContext>, endpoint: AuthEndpoint, host: String, port: Int, backlog: Int, services: [any Service],
        timeouts: ConnectionTimeouts, onServerRunning: @escaping @Sendable (Int) async -> Void, logger: Logger
    ) {
        let responder = router.buildResponder()
        let channelSetup = FastAuthChannel(
            responder: { request, responseWriter, channel in
                var requestLogger = logger
                requestLogger[metadataKey: "hb.request.id"] = .stringConvertible(RequestID())
                let response = try await withLogger(requestLogger) { requestLogger in
                    let context = GatewayRequestContext(source: .init(channel: channel, logger: requestLogger))
                    var response: Response
                    do {
                        response = try await responder.respond(to: request, context: context)
                    } catch let error as HTTPParserError {
                        throw error
                    } catch {
                        requestLogger.debug("Unrecognised Error", metadata: ["error.type": "\(error)"])
                        response = Response(status: .internalServerError, body: .init())
                    }
                    response.headers[.date] = HTTPDateHeader.now
                    return response
                }
                try await responseWriter.write(response: response.head, body: response.body)
            },
            endpoint: endpoint, logger: logger, timeouts: timeouts)
        self.server = GatewayHTTPServer(
            channelSetup: channelSetup, host: host, port: port, backlog: backlog, eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: logger, onServerRunning: onServerRunning)
        self.services = services
        self.logger = logger
    }

    public func run() async throws {
        try await ServiceGroup(configuration: .init(services: services + [server], logger: logger)).run()
    }

    /// Runs until one of `gracefulShutdownSignals` arrives, then shuts down gracefully.
    public func runService(gracefulShutdownSignals: [UnixSignal] = [.sigterm, .sigint]) async throws {
        try await ServiceGroup(configuration: .init(services: [self], gracefulShutdownSignals: gracefulShutdownSignals, logger: logger)).run()
    }
}

extension GatewayApplication: CustomStringConvertible {
    /// Service lifecycle logs name services by their description; the default one would print the whole server.
    public var description: String { "GatewayApplication" }
}
