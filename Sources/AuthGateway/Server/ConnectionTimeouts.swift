import NIOCore

/// How long a connection may take to send a request head, and stay idle between requests, before the gateway
/// closes it: without limits a slow or silent client holds a connection (and its buffers) forever.
///
/// Only waiting for a request counts: while a decision or a router answer is pending, and while a path-style
/// stream is served (it has its own `idle_timeout`), no timeout of these runs.
public struct ConnectionTimeouts: Sendable, Equatable {
    /// From a connection's opening, or the first byte of a request head, to the end of that head.
    public var header: Duration
    /// From the end of an answer to the next request's first byte. Above Go's 90 s idle-connection timeout, so
    /// Traefik closes its idle connections first and never sends on one the gateway is closing.
    public var idle: Duration

    public init(header: Duration = .seconds(30), idle: Duration = .seconds(120)) {
        self.header = header
        self.idle = idle
    }

    /// A positive duration written as in the policy (`30s`, `2m`, `1h`, or plain seconds); nil otherwise.
    public static func duration(_ text: String) -> Duration? {
        guard let seconds = PolicyReader.parseDuration(text), seconds > 0, seconds.isFinite, seconds < 86_400 * 365 else { return nil }
        return .milliseconds(Int64((seconds * 1000).rounded(.up)))
    }
}

/// A connection's one scheduled timeout check: armed when the connection opens and moved only when it fires, so
/// requests add no timer work (each request only records when the connection went idle).
struct ConnectionTimeoutTimer {
    private var scheduled: Scheduled<Void>?

    /// The longest the check may sleep: what starts waiting after a check runs out no earlier than this after it,
    /// so checking again by then catches every deadline on time.
    let interval: TimeAmount

    init(_ timeouts: ConnectionTimeouts) {
        interval = TimeAmount(min(timeouts.header, timeouts.idle))
    }

    /// Runs `check` on the connection's loop at `deadline`, or sooner when `interval` from now is earlier.
    mutating func arm(at deadline: NIODeadline, context: ChannelHandlerContext, _ check: @escaping () -> Void) {
        scheduled?.cancel()
        let soonest = min(deadline, .now() + interval)
        scheduled = context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(deadline: soonest, check)
    }

    mutating func cancel() {
        scheduled?.cancel()
        scheduled = nil
    }
}
