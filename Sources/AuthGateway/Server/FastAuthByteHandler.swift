import Logging
import NIOCore

/// The first handler on every connection: answers decision requests straight from the socket's bytes, and hands
/// the connection to the HTTP/1 codec pipeline (`FastAuthChannel`) at the first request it does not answer itself.
///
/// Most connections Traefik opens to the gateway carry a few forwardAuth calls and nothing else; for those, no HTTP
/// codec, header conversion or other handler is ever set up. `FastAuthRequestParser` decides what is answered here;
/// everything else, including the bytes already read, goes to the codec once and for good, in order, so a request
/// this handler does not understand is parsed, limited and refused exactly as before. One request is answered at a
/// time: bytes that arrive while an answer is pending wait for it (and reads pause once some are waiting).
final class FastAuthByteHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let decisions: FastAuthDecisions
    private let installHTTPPipeline: (ChannelHandlerContext) throws -> Void
    /// Settled with nil when the connection ends before a hand-over; after one, `FastAuthHandler` settles it.
    private let handoff: EventLoopPromise<FastAuthChannel.HummingbirdValue?>
    private var handedOver = false
    private let logger: Logger
    /// Bytes read and not yet answered or handed over.
    private var buffered: ByteBuffer?
    private var answerPending = false
    private var inputClosed = false
    private var readHeld = false
    private var quiesceHeld = false
    /// After `Connection: close`, a quiesce or a handed-over connection: nothing more is read into a request here.
    private var done = false
    private let timeouts: (header: TimeAmount, idle: TimeAmount)
    private var timer: ConnectionTimeoutTimer
    private var timeoutsStarted = false
    /// When the connection opened or the unfinished head in `buffered` began; nil while none is awaited.
    private var headSince: NIODeadline?
    /// When the last answer was written.
    private var idleSince = NIODeadline.now()

    /// `installHTTPPipeline` adds the codec handlers after this one; the handler then removes itself.
    init(
        decisions: FastAuthDecisions, handoff: EventLoopPromise<FastAuthChannel.HummingbirdValue?>, logger: Logger,
        timeouts: ConnectionTimeouts = .init(), installHTTPPipeline: @escaping (ChannelHandlerContext) throws -> Void
    ) {
        self.decisions = decisions
        self.handoff = handoff
        self.logger = logger
        self.timeouts = (TimeAmount(timeouts.header), TimeAmount(timeouts.idle))
        self.timer = ConnectionTimeoutTimer(timeouts)
        self.installHTTPPipeline = installHTTPPipeline
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startTimeouts(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        startTimeouts(context: context)
        context.fireChannelActive()
    }

    /// The first head is due within the header timeout of the connection's opening.
    private func startTimeouts(context: ChannelHandlerContext) {
        guard !timeoutsStarted, !done else { return }
        timeoutsStarted = true
        let now = NIODeadline.now()
        headSince = now
        timer.arm(at: now + timeouts.header, context: context) { self.checkTimeouts(context: context) }
    }

    /// Closes a connection that has waited too long for a head (header timeout) or sat idle after its last answer
    /// (idle timeout); otherwise checks again when the earliest of them could run out.
    private func checkTimeouts(context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        let deadline: NIODeadline
        if answerPending {
            deadline = now + timeouts.idle
        } else if let headSince {
            deadline = headSince + timeouts.header
        } else {
            deadline = idleSince + timeouts.idle
        }
        guard now < deadline else {
            logger.debug("closing a connection that sent no request in time", metadata: ["waiting_for": "\(headSince == nil ? "request" : "request head")"])
            done = true
            buffered = nil
            context.close(promise: nil)
            return
        }
        timer.arm(at: deadline, context: context) { self.checkTimeouts(context: context) }
    }

    /// How many answered bytes may stay in front of unanswered ones before they are discarded.
    static let discardThreshold = FastAuthRequestParser.maximumHeadLength

    /// The memory held for bytes not yet answered (tests check it stays bounded).
    var bufferedCapacity: Int { buffered?.capacity ?? 0 }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard !done else { return }
        if buffered == nil {
            buffered = bytes
        } else {
            // Only a request split across reads (or pipelined behind a pending answer) gets here. Its storage still
            // holds every answered request before it: drop those once they are worth a copy, as NIO's
            // ByteToMessageDecoder does, so a connection keeps about one head, not everything it ever sent.
            if buffered!.readerIndex >= Self.discardThreshold { buffered!.discardReadBytes() }
            buffered!.writeBuffer(&bytes)
        }
        if !answerPending { serveBuffered(context: context) }
    }

    /// Answers or hands over what is buffered, as far as it goes without waiting for an answer.
    private func serveBuffered(context: ChannelHandlerContext) {
        while !answerPending, !done, var bytes = buffered {
            let outcome = bytes.withUnsafeReadableBytes { FastAuthRequestParser.parse($0) }
            switch outcome {
            case .incomplete:
                if inputClosed { handOver(context: context) }
                if headSince == nil { headSince = .now() }
                return
            case .other:
                handOver(context: context)
                return
            case .request(let request, let length):
                headSince = nil
                bytes.moveReaderIndex(forwardBy: length)
                buffered = bytes.readableBytes > 0 ? bytes : nil
                answer(request, context: context)
            }
        }
        if inputClosed, !answerPending, !done {
            // Everything the client sent is answered; it will send nothing more.
            done = true
            context.close(promise: nil)
        }
    }

    private func answer(_ request: FastAuthRequest, context: ChannelHandlerContext) {
        let forwarded = FastAuthDecisions.forwarded(
            to: request.endpoint, method: request.method, target: request.target, authority: request.authority,
            headerFields: request.headerFields)
        let omitBody = request.method == .head
        let asksToClose = request.asksToClose
        answerPending = true
        decisions.start(forwarded: forwarded, context: context) { answer in
            self.write(answer, omitBody: omitBody, asksToClose: asksToClose, context: context)
        }
    }

    private func write(_ answer: AuthAnswer, omitBody: Bool, asksToClose: Bool, context: ChannelHandlerContext) {
        answerPending = false
        idleSince = .now()
        guard context.channel.isActive else { return }
        context.writeAndFlush(
            wrapOutboundOut(answer.http1Bytes(date: HTTPDateHeader.now, omitBody: omitBody, allocator: context.channel.allocator)),
            promise: nil)
        if asksToClose || quiesceHeld {
            // As Hummingbird: the answer goes out, then the output closes (an idle connection on shutdown closes).
            done = true
            buffered = nil
            context.close(mode: asksToClose ? .output : .all, promise: nil)
            return
        }
        serveBuffered(context: context)
        if readHeld, !answerPending {
            readHeld = false
            context.read()
        }
    }

    /// Puts the HTTP/1 codec pipeline behind this handler, passes it everything read so far, and leaves.
    private func handOver(context: ChannelHandlerContext) {
        done = true
        // From here on `FastAuthHandler` keeps the connection's timeouts.
        timer.cancel()
        do {
            try installHTTPPipeline(context)
        } catch {
            logger.error("cannot set up HTTP/1 on a connection", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        handedOver = true
        if let bytes = buffered {
            buffered = nil
            context.fireChannelRead(wrapInboundOut(bytes))
            context.fireChannelReadComplete()
        }
        if inputClosed { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        if readHeld {
            readHeld = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        // Reads go on while an answer is pending (pausing them costs two epoll changes per request), but not once
        // bytes are waiting behind it: a client cannot queue unbounded requests.
        if answerPending, buffered != nil {
            readHeld = true
        } else {
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case ChannelEvent.inputClosed:
            guard !done else {
                // After `Connection: close` the client has read its answer and closed too.
                context.close(promise: nil)
                return
            }
            inputClosed = true
            if !answerPending { serveBuffered(context: context) }
        case is ChannelShouldQuiesceEvent:
            // Graceful shutdown: an idle connection closes now, a busy one after its answer.
            guard !done else { return }
            if answerPending {
                quiesceHeld = true
            } else {
                done = true
                context.close(promise: nil)
            }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer.cancel()
        if !handedOver { handoff.succeed(nil) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Only socket errors reach here before a hand-over; the connection is of no further use.
        context.close(promise: nil)
    }
}
