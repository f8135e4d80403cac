import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// Hummingbird's HTTP/1 child channel, except that Hummingbird's async request loop is attached to a connection
/// only when its first request for another endpoint than the decision ones arrives.
///
/// Traefik opens a new connection for most forwardAuth calls. Hummingbird wraps every connection in a
/// `NIOAsyncChannel` and runs an async request loop on it; for a connection that only ever carries decision requests
/// that setup and teardown cost more than the decision. Here the pipeline is Hummingbird's (same codec, decoder
/// limits and connection-state handler) with `FastAuthHandler` in front; the handler creates the `NIOAsyncChannel`
/// and hands it to `handle` (which then runs Hummingbird's own loop on it) the first time it passes a request on.
struct FastAuthChannel: ServerChildChannel {
    typealias HummingbirdValue = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    /// One accepted connection and, once needed, the async channel Hummingbird serves it through.
    struct Value: ServerChildChannelValue {
        let channel: any Channel
        /// nil when the connection closed having carried decision requests only.
        let handoff: EventLoopFuture<HummingbirdValue?>
    }

    let hummingbird: HTTP1Channel
    let endpoint: AuthEndpoint
    let logger: Logger
    let timeouts: ConnectionTimeouts

    init(responder: @escaping HTTPChannelHandler.Responder, endpoint: AuthEndpoint, logger: Logger, timeouts: ConnectionTimeouts = .init()) {
        self.hummingbird = HTTP1Channel(responder: responder, configuration: .init())
        self.endpoint = endpoint
        self.logger = logger
        self.timeouts = timeouts
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let handoff = channel.eventLoop.makePromise(of: HummingbirdValue?.self)
            let decisions = FastAuthDecisions(endpoint: endpoint, logger: self.logger)
            let byteHandler = FastAuthByteHandler(decisions: decisions, handoff: handoff, logger: self.logger, timeouts: timeouts) { context in
                try installHTTPPipeline(on: context.pipeline, decisions: decisions, handoff: handoff, logger: logger)
            }
            try channel.pipeline.syncOperations.addHandler(byteHandler)
            return Value(channel: channel, handoff: handoff.futureResult)
        }
    }

    /// Hummingbird's HTTP/1 pipeline with `FastAuthHandler` in front of its request loop, added at the end of
    /// `pipeline` when `FastAuthByteHandler` hands the connection over.
    private func installHTTPPipeline(
        on pipeline: ChannelPipeline, decisions: FastAuthDecisions, handoff: EventLoopPromise<HummingbirdValue?>, logger: Logger
    ) throws {
        let decoder = hummingbird.configuration.httpDecoder
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = decoder.maxHeaderFieldSize
        limits.maxHeaderListSize = decoder.maxHeaderListSize
        limits.maxHeaderFieldCount = decoder.maxHeaderFieldCount
        // As HTTP1Channel.setup: ordering of pipelined answers is kept by the handlers, errors become a 400 in
        // Hummingbird's loop, and HTTPTypes already validated outbound headers.
        try pipeline.syncOperations.configureHTTPServerPipeline(
            withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
        try pipeline.syncOperations.addHandler(AbsoluteFormHandler())
        try pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        try pipeline.syncOperations.addHandler(FastAuthHandler(decisions: decisions, logger: self.logger, handoff: handoff, timeouts: timeouts))
        // No idle timeout here: it would see only the requests passed on, not the decisions answered in front of
        // it; `FastAuthHandler` keeps the connection's timeouts.
        try pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
    }

    func handle(value: Value, logger: Logger) async {
        guard let asyncChannel = try? await value.handoff.get() else { return }
        await serve(asyncChannel, logger: logger)
    }

    /// Runs Hummingbird's request loop on a handed-over connection until it closes.
    func serve(_ asyncChannel: HummingbirdValue, logger: Logger) async {
        await hummingbird.handle(value: asyncChannel, logger: logger)
    }
}
