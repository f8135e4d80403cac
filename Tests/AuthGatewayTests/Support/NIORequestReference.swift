import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP1

/// What an HTTP/1 request parser made of a byte stream, in the terms the decision path reads.
enum ParsedRequestEvent: Equatable, CustomStringConvertible {
    /// A request head: method, target, the first `Host` value and every other field in order.
    case head(method: String, target: String, version: String, authority: String?, fields: [String], keepAlive: Bool)
    case body([UInt8])
    case end
    case error(String)

    var description: String {
        switch self {
        case .head(let method, let target, let version, let authority, let fields, let keepAlive):
            "head(\(method) \(target.debugDescription) \(version) host=\(authority?.debugDescription ?? "nil") \(fields)\(keepAlive ? "" : " close"))"
        case .body(let bytes): "body(\(bytes.count) bytes)"
        case .end: "end"
        case .error(let error): "error(\(error))"
        }
    }
}

/// Runs bytes through SwiftNIO's `HTTPRequestDecoder` in an `EmbeddedChannel`, the reference the fast parser is held to.
enum NIORequestReference {
    /// The gateway's decoder limits (Hummingbird's defaults, as `FastAuthChannel` passes them on).
    static let limits: NIOHTTPDecoderLimitConfiguration = {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = 80 * 1024
        limits.maxHeaderListSize = 80 * 1024
        limits.maxHeaderFieldCount = 1000
        return limits
    }()

    /// The parts NIO's decoder yields for `bytes` (and for the end of input when `closing`), then its error, if any.
    static func events(_ bytes: ArraySlice<UInt8>, closing: Bool) -> [ParsedRequestEvent] {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(limitConfiguration: limits)))
        var events: [ParsedRequestEvent] = []
        var failure: (any Error)?
        do {
            try channel.writeInbound(channel.allocator.buffer(bytes: bytes))
        } catch {
            failure = error
        }
        drain(channel, into: &events)
        if failure == nil, closing {
            channel.pipeline.fireChannelInactive()
            channel.embeddedEventLoop.run()
            do { try channel.throwIfErrorCaught() } catch { failure = error }
            drain(channel, into: &events)
        }
        if let failure { events.append(.error(String(describing: failure))) }
        _ = try? channel.finish(acceptAlreadyClosed: true)
        return events
    }

    private static func drain(_ channel: EmbeddedChannel, into events: inout [ParsedRequestEvent]) {
        while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) {
            switch part {
            case .head(let head):
                var authority: String?
                var fields: [String] = []
                // As the codec's HTTP1ToHTTPServerCodec turns them into what the decision reads: the first Host is the
                // authority, every field value is legalized (trimmed) by HTTPField.
                for (name, value) in head.headers {
                    if authority == nil, name.lowercased() == "host" {
                        authority = HTTPRequest(method: .get, scheme: nil, authority: value, path: "/").authority
                    } else if let fieldName = HTTPField.Name(name) {
                        fields.append("\(name): \(HTTPField(name: fieldName, value: value).value)")
                    }
                }
                events.append(
                    .head(method: head.method.rawValue, target: head.uri, version: "\(head.version)", authority: authority, fields: fields,
                        keepAlive: head.isKeepAlive))
            case .body(let buffer):
                let bytes = Array(buffer.readableBytesView)
                if case .body(let earlier) = events.last {
                    events[events.count - 1] = .body(earlier + bytes)
                } else {
                    events.append(.body(bytes))
                }
            case .end:
                events.append(.end)
            }
        }
    }
}

/// SplitMix64: a small seeded generator, so every run builds the same requests.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
