#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle

/// The gateway's listening sockets: one per event loop (`SO_REUSEPORT` on Linux), each connection served on the loop
/// that accepted it with `FastAuthChannel`'s pipeline, and only connections handed over to Hummingbird get an async
/// task.
///
/// Hummingbird's own server delivers every accepted connection through an async sequence to a task of its own; on
/// two cores with Traefik opening a new connection for most auth calls, those task wake-ups cost about as much as
/// the answer. One listener per loop also keeps each connection on one thread from accept to close: with a single
/// listener NIO accepts on one loop and hands every other connection to the next, a cross-thread wake-up at accept
/// and another at close.
struct GatewayHTTPServer: Service {
    let channelSetup: FastAuthChannel
    let host: String
    let port: Int
    let backlog: Int
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    let onServerRunning: @Sendable (Int) async -> Void

    /// Another process already accepts connections on the address (a socket per loop cannot tell on its own).
    struct AddressInUse: Error, CustomStringConvertible {
        let address: String
        var description: String { "\(address) is already in use: another process accepts connections there" }
    }

    func run() async throws {
        let (handedOver, continuation) = AsyncStream.makeStream(of: FastAuthChannel.HummingbirdValue.self)
        let loops = Array(eventLoopGroup.makeIterator())
        #if os(Linux)
        let sharePort = loops.count > 1
        #else
        let sharePort = false
        #endif
        if sharePort, port != 0, await Self.accepts(host: host, port: port, on: loops[0]) {
            throw AddressInUse(address: "\(host):\(port)")
        }
        var listeners: [(channel: any Channel, quiescing: ServerQuiescingHelper)] = []
        var boundPort = port
        for loop in sharePort ? loops : [loops[0]] {
            let quiescing = ServerQuiescingHelper(group: loop)
            do {
                let channel = try await bind(on: loop, port: boundPort, sharePort: sharePort, quiescing: quiescing, handedOver: continuation)
                boundPort = channel.localAddress?.port ?? boundPort
                listeners.append((channel, quiescing))
            } catch {
                for listener in listeners { try? await listener.channel.close() }
                throw error
            }
        }
        let servers = listeners
        let port = boundPort
        logger.info("Server started and listening on \(host):\(port)", metadata: ["listeners": "\(servers.count)"])

        await withGracefulShutdownHandler {
            await onServerRunning(port)
            await withDiscardingTaskGroup { group in
                for await asyncChannel in handedOver {
                    group.addTask { await channelSetup.serve(asyncChannel, logger: logger) }
                }
            }
        } onGracefulShutdown: {
            // Stop accepting, let every connection finish the request it is on, and end once all are closed.
            let closed = servers.map { listener in
                let promise = listener.channel.eventLoop.makePromise(of: Void.self)
                listener.quiescing.initiateShutdown(promise: promise)
                return promise.futureResult
            }
            EventLoopFuture.andAllComplete(closed, on: servers[0].channel.eventLoop).whenComplete { _ in continuation.finish() }
        }
        // Cancelled rather than shut down gracefully: the listening sockets still have to go.
        for listener in servers { try? await listener.channel.close() }
    }

    private func bind(
        on loop: any EventLoop, port: Int, sharePort: Bool, quiescing: ServerQuiescingHelper,
        handedOver: AsyncStream<FastAuthChannel.HummingbirdValue>.Continuation
    ) async throws -> any Channel {
        let channelSetup = channelSetup
        let logger = logger
        var bootstrap = ServerBootstrap(group: loop, childGroup: loop)
            .serverChannelOption(ChannelOptions.backlog, value: Int32(backlog))
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
        #if os(Linux)
        if sharePort {
            bootstrap = bootstrap.serverChannelOption(ChannelOptions.socket(SocketOptionLevel(SOL_SOCKET), SO_REUSEPORT), value: 1)
        }
        #endif
        return try await bootstrap
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channelSetup.setup(channel: channel, logger: logger).map { connection in
                    connection.handoff.whenSuccess { asyncChannel in
                        if let asyncChannel { handedOver.yield(asyncChannel) }
                    }
                }
            }
            .bind(host: host, port: port).get()
    }

    /// Whether something accepts TCP connections at `host:port` (the wildcard addresses checked on loopback).
    private static func accepts(host: String, port: Int, on loop: any EventLoop) async -> Bool {
        let target = host == "0.0.0.0" || host.isEmpty ? "127.0.0.1" : host == "::" ? "::1" : host
        guard let channel = try? await ClientBootstrap(group: loop).connectTimeout(.seconds(2)).connect(host: target, port: port).get()
        else { return false }
        try? await channel.close()
        return true
    }
}
