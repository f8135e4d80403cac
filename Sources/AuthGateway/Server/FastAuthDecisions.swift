import HTTPTypes
import Logging
import NIOCore

/// Runs one connection's decisions for the fast-path handlers, on the connection's own event loop.
final class FastAuthDecisions {
    private let endpoint: AuthEndpoint
    private let logger: Logger
    /// The peer does not change on a connection: read once, on the first decision.
    private var peer: IPAddress??
    private var executor: EventLoopTaskExecutor?

    init(endpoint: AuthEndpoint, logger: Logger) {
        self.endpoint = endpoint
        self.logger = logger
    }

    /// The headers the decision reads for a request to `endpoint`: the request's own for `/auth`, restated from the
    /// request line for Envoy.
    static func forwarded(
        to endpoint: FastAuthHandler.Endpoint, method: HTTPRequest.Method, target: String, authority: String?, headerFields: HTTPFields
    ) -> HTTPFields {
        switch endpoint {
        case .forwardAuth:
            headerFields
        case .envoy:
            EnvoyAuthEndpoint.forwardedHeaders(method: method, target: target, authority: authority, headers: headerFields)
        }
    }

    /// Decides on `forwarded` and calls `answered` with the answer on the connection's event loop.
    ///
    /// The decision runs as a task whose executor is that event loop: a decision served from caches never
    /// suspends, so it runs to completion right after the current read batch, on this thread.
    func start(forwarded: HTTPFields, context: ChannelHandlerContext, answered: @escaping (AuthAnswer) -> Void) {
        if peer == nil { peer = .some(context.channel.remoteAddress?.ipAddress.flatMap(IPAddress.init)) }
        let peer = self.peer ?? nil
        let executor = self.executor ?? EventLoopTaskExecutor(context.eventLoop)
        self.executor = executor
        let bound = NIOLoopBound(answered, eventLoop: context.eventLoop)
        let endpoint = self.endpoint
        let logger = self.logger
        Task(executorPreference: executor) {
            let answer = await endpoint.answer(forwarded: forwarded, peer: peer, logger: logger)
            if bound.eventLoop.inEventLoop {
                bound.value(answer)
            } else {
                bound.eventLoop.execute { bound.value(answer) }
            }
        }
    }
}
