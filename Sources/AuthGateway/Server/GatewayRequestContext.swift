import Hummingbird
import NIOCore

/// The request context of the gateway's HTTP server: Hummingbird's core context plus the peer address, which
/// decides whether forwarded headers are believed.
public struct GatewayRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }

    /// The peer's IP address, or nil for a non-IP transport.
    var peerAddress: IPAddress? {
        remoteAddress?.ipAddress.flatMap(IPAddress.init)
    }
}
