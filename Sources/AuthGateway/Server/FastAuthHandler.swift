import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// Answers the decision endpoints (`/auth`, `/envoy/auth/**`) straight from the channel pipeline and hands every
/// other request to Hummingbird untouched.
///
/// Hummingbird builds a `Request`, a request context, a router lookup and an async response write for every request;
/// for a forwardAuth call that is several times the cost of the decision itself. This handler sits right after the
/// HTTP codec, so it sees each request head first. A decision request is answered here with exactly what
/// `AuthEndpoint` answers through the router (same status, headers, body, and the `Date` Hummingbird adds); any other
/// request, and every request that arrives while one passed to Hummingbird is still unanswered, continues down the
/// pipeline, into the `NIOAsyncChannel` this handler creates for Hummingbird the first time it needs one (see
/// `FastAuthChannel`). Hummingbird answers one request at a time, in order, so responses on a pipelined connection stay in
/// request order: while an answer of this handler is pending, later requests are held (and reads paused once one
/// is held) until it is written; while a Hummingbird answer is pending, later requests go to Hummingbird too.
///
/// A decision request's body is never read by the decision: it is discarded as it arrives, and the connection is
/// closed once more than `maximumIgnoredBody` bytes of it have come in.
final class FastAuthHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// Proxies send decision requests without a body (Traefik never forwards one); this much is tolerated.
    static let maximumIgnoredBody = 64 * 1024

    /// Which decision endpoint a request head addresses.
    enum Endpoint {
        case forwardAuth
        case envoy
    }

    /// Where the inbound stream is.
    private enum Reading {
        case betweenRequests
        /// Inside a request this handler answers: its body is discarded.
        case decisionRequest
        /// Inside a request handed to Hummingbird: its parts go down the pipeline.
        case passedRequest
        /// The connection is closing after an answer: nothing more is read into a request.
        case closing
    }

    /// How the connection ends after the pending answer.
    private enum CloseAfterAnswer {
        case keepOpen
        /// `Connection: close`: shut the output after the answer, as Hummingbird does.
        case output
        /// Too much ignored body: close the whole connection.
        case all
    }

    private let logger: Logger
    private var reading = Reading.betweenRequests
    private var passedAnswersOutstanding = 0
    private var answerPending = false
    private var closeAfterAnswer = CloseAfterAnswer.keepOpen
    private var ignoredBodyBytes = 0
    /// What arrived after the request whose answer is pending, in arrival order.
    private enum Held {
        case part(HTTPRequestPart)
        /// The client half-closed: it comes after its last requests, so it waits behind them.
        case inputClosed
        /// A decoding error: it comes after the requests decoded before it.
        case error(any Error)
    }

    private var held = CircularBuffer<Held>()
    private var readHeld = false
    /// A request asked to leave HTTP/1 (`Upgrade`, `CONNECT`): NIO's decoder parses nothing after it and would keep
    /// every later byte, so once it is read whole nothing more is read, and the connection ends after its answer.
    private var switchRequested = false
    private var readsStopped: Bool { switchRequested && reading == .closing }
    /// Set when the answer that ends a switching connection has been written: the next flush closes.
    private var closeOnFlush = false
    private var quiesceHeld = false
    private let decisions: FastAuthDecisions
    /// Receives Hummingbird's async channel when the first request is passed on, or nil when the connection ends
    /// without one.
    private let handoff: EventLoopPromise<FastAuthChannel.HummingbirdValue?>
    private var handedOver = false
    private var handoffSettled = false

    /// The context of NIO's HTTP/1 response encoder: writing there puts finished bytes straight on the socket.
    private var bytesContext: ChannelHandlerContext?

    private let timeouts: (header: TimeAmount, idle: TimeAmount)
    private var timer: ConnectionTimeoutTimer
    /// When bytes of the next head began to arrive (or the connection was handed over); nil once it is read.
    private var headSince: NIODeadline?
    /// When the last answer ended, or the last part of a request body arrived.
    private var lastActivity = NIODeadline.now()

    init(
        decisions: FastAuthDecisions, logger: Logger, handoff: EventLoopPromise<FastAuthChannel.HummingbirdValue?>,
        timeouts: ConnectionTimeouts = .init()
    ) {
        self.decisions = decisions
        self.logger = logger
        self.handoff = handoff
        self.timeouts = (TimeAmount(timeouts.header), TimeAmount(timeouts.idle))
        self.timer = ConnectionTimeoutTimer(timeouts)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        bytesContext = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self)
        // Handed over with the bytes of a head, usually whole; if not, it is due within the header timeout.
        let now = NIODeadline.now()
        headSince = now
        timer.arm(at: now + timeouts.header, context: context) { self.checkTimeouts(context: context) }
    }

    /// Closes a connection that waits too long for a head (header timeout), for more of a request body or for a
    /// next request (idle timeout). Nothing runs out while an answer is pending or Hummingbird is still answering
    /// (a path-style stream ends by its own `idle_timeout`).
    private func checkTimeouts(context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        let deadline: NIODeadline
        switch reading {
        case _ where answerPending:
            deadline = now + timeouts.idle
        case .decisionRequest, .passedRequest:
            deadline = lastActivity + timeouts.idle
        case _ where passedAnswersOutstanding > 0:
            deadline = now + timeouts.idle
        case .betweenRequests, .closing:
            deadline = headSince.map { $0 + timeouts.header } ?? lastActivity + timeouts.idle
        }
        guard now < deadline else {
            logger.debug("closing a connection that sent no request in time")
            reading = .closing
            held.removeAll()
            context.close(promise: nil)
            return
        }
        timer.arm(at: deadline, context: context) { self.checkTimeouts(context: context) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Bytes arrived that made no whole head: the next head has begun (reads complete after every socket read,
        // whatever the decoder made of them).
        if headSince == nil, reading == .betweenRequests, !answerPending, passedAnswersOutstanding == 0, held.isEmpty {
            headSince = .now()
        }
        context.fireChannelReadComplete()
    }

    /// The decision endpoint `head` addresses, or nil when the router should have it (any other path, or a method
    /// the decision endpoints are not registered for, which the router refuses as it always did).
    static func endpoint(of head: HTTPRequest) -> Endpoint? {
        guard let target = head.path, AuthEndpoint.methods.contains(head.method) else { return nil }
        let path = target.utf8.firstIndex(of: UInt8(ascii: "?")).map { target[..<$0] } ?? target[...]
        if path == "/auth" { return .forwardAuth }
        if path == EnvoyAuthEndpoint.prefix || path.hasPrefix(EnvoyAuthEndpoint.prefix + "/") { return .envoy }
        return nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        // The current decision request's own body can be discarded at once; anything after it waits for the answer.
        if !held.isEmpty || (answerPending && reading != .decisionRequest) {
            held.append(.part(part))
            return
        }
        if handle(part, context: context) { context.fireChannelReadComplete() }
    }

    /// Processes one inbound part; true when it was passed down the pipeline (a read-complete must follow).
    private func handle(_ part: HTTPRequestPart, context: ChannelHandlerContext) -> Bool {
        switch (reading, part) {
        case (.closing, _):
            return false
        case (.betweenRequests, .head(let head)):
            headSince = nil
            if Self.switchesProtocol(head) { switchRequested = true }
            if passedAnswersOutstanding == 0, let endpoint = Self.endpoint(of: head) {
                reading = .decisionRequest
                ignoredBodyBytes = 0
                startAnswer(to: head, endpoint: endpoint, context: context)
                return false
            }
            guard handOver(context: context) else { return false }
            passedAnswersOutstanding += 1
            reading = .passedRequest
        case (.decisionRequest, .body(let chunk)):
            lastActivity = .now()
            ignoredBodyBytes += chunk.readableBytes
            if ignoredBodyBytes > Self.maximumIgnoredBody {
                reading = .closing
                if answerPending { closeAfterAnswer = .all } else { context.close(promise: nil) }
            }
            return false
        case (.decisionRequest, .end):
            if switchRequested {
                reading = .closing
                if answerPending { closeAfterAnswer = .all } else { context.close(promise: nil) }
                return false
            }
            reading = closeAfterAnswer == .keepOpen ? .betweenRequests : .closing
            return false
        case (.decisionRequest, .head):
            // The decoder ends every request before the next head; should that ever break, close rather than guess.
            reading = .closing
            context.close(promise: nil)
            return false
        case (.passedRequest, .end):
            reading = .betweenRequests
            if switchRequested {
                reading = .closing
                // Answered before its end arrived: nothing is left to wait for.
                if passedAnswersOutstanding == 0 { context.close(promise: nil) }
            }
        case (.betweenRequests, _), (.passedRequest, _):
            lastActivity = .now()
            guard handOver(context: context) else { return false }
        }
        context.fireChannelRead(wrapInboundOut(part))
        return true
    }

    private func startAnswer(to head: HTTPRequest, endpoint: Endpoint, context: ChannelHandlerContext) {
        let forwarded = FastAuthDecisions.forwarded(
            to: endpoint, method: head.method, target: head.path ?? "", authority: head.authority, headerFields: head.headerFields)
        let omitBody = head.method == .head
        if Self.asksToClose(head.headerFields) { closeAfterAnswer = .output }
        answerPending = true
        decisions.start(forwarded: forwarded, context: context) { answer in
            self.write(answer, omitBody: omitBody, context: context)
        }
    }

    /// Hummingbird ends a connection after a request with `Connection: close`; the token is matched without case.
    static func asksToClose(_ headers: HTTPFields) -> Bool {
        hasConnectionToken("close", in: headers)
    }

    /// Whether `head` asks to leave HTTP/1: `CONNECT`, an `Upgrade` field or a `Connection: upgrade` token (a
    /// superset of what makes NIO's decoder stop parsing). The gateway switches to nothing, so it answers and closes.
    static func switchesProtocol(_ head: HTTPRequest) -> Bool {
        head.method == .connect || head.headerFields[.upgrade] != nil || hasConnectionToken("upgrade", in: head.headerFields)
    }

    private static func hasConnectionToken(_ token: String, in headers: HTTPFields) -> Bool {
        guard let value = headers[.connection] else { return false }
        return value.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == token }
    }

    private func write(_ answer: AuthAnswer, omitBody: Bool, context: ChannelHandlerContext) {
        answerPending = false
        lastActivity = .now()
        if let bytes = bytesContext {
            // Below the HTTP codecs: nothing of Hummingbird's can be queued there unwritten, because a decision
            // request is only answered here when no request passed to Hummingbird is still unanswered.
            bytes.writeAndFlush(NIOAny(answer.http1Bytes(date: HTTPDateHeader.now, omitBody: omitBody, allocator: context.channel.allocator)), promise: nil)
        } else {
            var head = answer.head
            head.headerFields[.date] = HTTPDateHeader.now
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            if let body = answer.body, !omitBody { context.write(wrapOutboundOut(.body(body)), promise: nil) }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }

        switch closeAfterAnswer {
        case .keepOpen:
            break
        case .output:
            reading = .closing
            held.removeAll()
            context.close(mode: .output, promise: nil)
        case .all:
            reading = .closing
            held.removeAll()
            context.close(promise: nil)
        }
        var passedAny = false
        while !answerPending, let next = held.popFirst() {
            switch next {
            case .part(let part):
                if handle(part, context: context) { passedAny = true }
            case .inputClosed:
                if passedAny {
                    context.fireChannelReadComplete()
                    passedAny = false
                }
                inputClosed(context: context)
            case .error(let error):
                failed(error, context: context)
            }
        }
        if passedAny { context.fireChannelReadComplete() }
        guard !answerPending else { return }
        if readHeld, !readsStopped {
            readHeld = false
            context.read()
        }
        if quiesceHeld {
            quiesceHeld = false
            context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }

    /// Attaches Hummingbird's async channel (once per connection); false when that failed and the connection closes.
    private func handOver(context: ChannelHandlerContext) -> Bool {
        guard !handedOver else { return true }
        do {
            let asyncChannel = try FastAuthChannel.HummingbirdValue(
                wrappingChannelSynchronously: context.channel, configuration: .init(isOutboundHalfClosureEnabled: true))
            handedOver = true
            settleHandoff(asyncChannel)
            return true
        } catch {
            logger.error("cannot attach the HTTP request loop to a connection", metadata: ["error": "\(error)"])
            reading = .closing
            context.close(promise: nil)
            return false
        }
    }

    private func settleHandoff(_ value: FastAuthChannel.HummingbirdValue?) {
        guard !handoffSettled else { return }
        handoffSettled = true
        handoff.succeed(value)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer.cancel()
        settleHandoff(nil)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer.cancel()
        bytesContext = nil
        settleHandoff(nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !held.isEmpty || answerPending {
            held.append(.error(error))
        } else {
            failed(error, context: context)
        }
    }

    /// Hummingbird's loop turns a parse error into its 400 answer and closes; it needs to be attached to do so. On a
    /// connection already ending (after `Connection: close`, the decoder refuses any further bytes) Hummingbird
    /// would not have read that far, so neither does this.
    private func failed(_ error: any Error, context: ChannelHandlerContext) {
        guard reading != .closing else { return }
        if handOver(context: context) { context.fireErrorCaught(error) }
    }

    /// The client half-closed and every request before that is answered or with Hummingbird: Hummingbird's loop
    /// ends the connection once its answers are out; without that loop nothing else would close it.
    private func inputClosed(context: ChannelHandlerContext) {
        if handedOver {
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        } else {
            reading = .closing
            context.close(promise: nil)
        }
    }

    func read(context: ChannelHandlerContext) {
        // Like NIO's pipelining handler, no new requests are read while one is held behind a pending answer. Reads go
        // on while only the answer is pending: pausing them would cost two epoll changes per request.
        if !held.isEmpty || readsStopped {
            readHeld = true
        } else {
            context.read()
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data), passedAnswersOutstanding > 0 {
            passedAnswersOutstanding -= 1
            lastActivity = .now()
            // The answer to the request that asked to switch protocols is the last one (nothing after it is parsed).
            if passedAnswersOutstanding == 0, switchRequested, reading == .closing { closeOnFlush = true }
        }
        context.write(data, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        context.flush()
        if closeOnFlush {
            closeOnFlush = false
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            if !held.isEmpty || answerPending {
                held.append(.inputClosed)
            } else {
                inputClosed(context: context)
            }
            return
        }
        // Hummingbird's connection handler closes an idle connection on graceful shutdown; it does not know about a
        // pending answer of this handler, so the event waits for it.
        if event is ChannelShouldQuiesceEvent, answerPending {
            quiesceHeld = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
