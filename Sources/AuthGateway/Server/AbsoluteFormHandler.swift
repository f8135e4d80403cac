import NIOCore
import NIOHTTP1

/// Turns an absolute-form request target (`GET http://host/path HTTP/1.1`) into origin form with the target's
/// authority as `Host`, as RFC 9112 §3.2.2 requires of a server; refuses (400) any other form it cannot read.
///
/// The HTTPTypes conversion behind it keeps only the path of such a target and takes the authority from `Host`,
/// so the host a decision or the reverse proxy acted on was not the one the request named. The fast decision
/// path reads origin-form targets only and hands every other request to the codec, so both paths now agree.
/// Origin-form requests (every proxy's) cost one byte comparison here.
final class AbsoluteFormHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    /// After a refused target nothing more is passed on: Hummingbird answers the error with 400 and closes.
    private var refused = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        guard case .head(var head) = unwrapInboundIn(data), head.uri.utf8.first != UInt8(ascii: "/") else {
            context.fireChannelRead(data)
            return
        }
        if head.method == .CONNECT || (head.method == .OPTIONS && head.uri == "*") {
            context.fireChannelRead(data)
            return
        }
        guard let (authority, target) = Self.split(absoluteForm: head.uri) else {
            refused = true
            context.fireErrorCaught(HTTPParserError.invalidURL)
            return
        }
        head.uri = target
        head.headers.replaceOrAdd(name: "Host", value: authority)
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    /// The authority and the origin-form target of an `http` or `https` absolute-form target; nil for anything else,
    /// or an authority with user information, no host or a port that is not a number.
    static func split(absoluteForm uri: String) -> (authority: String, target: String)? {
        let lowered = uri.prefix(8).lowercased()
        let schemeLength = lowered.hasPrefix("http://") ? 7 : lowered.hasPrefix("https://") ? 8 : 0
        guard schemeLength > 0 else { return nil }
        let rest = uri.dropFirst(schemeLength)
        let end = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        let authority = String(rest[..<end])
        let target = rest[end...]
        guard !authority.isEmpty, !authority.contains("@"), !target.contains("#"),
            let host = ForwardedRequest.canonicalHost(authority), !host.isEmpty, !host.hasPrefix(":")
        else { return nil }
        return (authority, target.hasPrefix("/") ? String(target) : "/" + target)
    }
}
