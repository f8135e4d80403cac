import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle

/// The gateway's listening socket: SwiftNIO accepts each connection and sets up `FastAuthChannel`'s pipeline on
/// it, and only connections handed over to Hummingbird get an async task.
///
/// Hummingbird's own server delivers every accepted connection through an async sequence to a task of its own; on
/// two cores with Traefik opening a new connection for most auth calls, those task wake-ups cost about as much as
/// the answer. Connections that only carry decision requests here stay entirely on their event loop.
struct GatewayHTTPServer: Service {
    let channelSetup: FastAuthChannel
    let host: String
    let port: Int
    let backlog: Int
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    let onServerRunning: @Sendable (Int) async -> Void

    func run() async throws {
        let (handedOver, continuation) = AsyncStream.makeStream(of: FastAuthChannel.HummingbirdValue.self)
        let quiescing = ServerQuiescingHelper(group: eventLoopGroup)
        let channelSetup = channelSetup
        let logger = logger
        let serverChannel = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(ChannelOptions.backlog, value: Int32(backlog))
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channelSetup.setup(channel: channel, logger: logger).map { connection in
                    connection.handoff.whenSuccess { asyncChannel in
                        if let asyncChannel { continuation.yield(asyncChannel) }
                    }
                }
            }
            .bind(host: host, port: port).get()
        let boundPort = serverChannel.localAddress?.port ?? port
        logger.info("Server started and listening on \(host):\(boundPort)")

        await withGracefulShutdownHandler {
            await onServerRunning(boundPort)
            await withDiscardingTaskGroup { group in
                for await asyncChannel in handedOver {
                    group.addTask { await channelSetup.serve(asyncChannel, logger: logger) }
                }
            }
        } onGracefulShutdown: {
            // Stop accepting, let every connection finish the request it is on, and end once all are closed.
            let closed = serverChannel.eventLoop.makePromise(of: Void.self)
            closed.futureResult.whenComplete { _ in continuation.finish() }
            quiescing.initiateShutdown(promise: closed)
        }
        // Cancelled rather than shut down gracefully: the listening socket still has to go.
        try? await serverChannel.close()
    }
}
