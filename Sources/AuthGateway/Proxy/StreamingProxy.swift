import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1

/// Sends one request upstream and streams the answer back chunk by chunk, never buffering a body.
///
/// The request body streams upstream as the client sends it; the response body streams to the client as the
/// backend sends it (each chunk is written, and flushed, as it arrives). A client that goes away fails the next
/// write, which ends the loop and drops the upstream body: async-http-client then closes that connection, so
/// the backend sees its stream end. A backend that ends its stream ends the client's.
struct StreamingProxy: Sendable {
    /// Why the backend did not answer.
    enum Failure: Error {
        /// Connection refused, reset, or no valid HTTP answer: 502.
        case unreachable(String)
        /// No answer within the connect or idle timeout: 504.
        case timedOut(String)

        var status: HTTPResponse.Status {
            switch self {
            case .unreachable: .badGateway
            case .timedOut: .gatewayTimeout
            }
        }

        var reason: String {
            switch self {
            case .unreachable(let reason), .timedOut(let reason): reason
            }
        }
    }

    let client: HTTPClient
    let idleTimeout: Duration

    /// Sends `request` and waits for the response head (at most the idle timeout).
    func execute(_ request: HTTPClientRequest, logger: Logger) async -> Result<HTTPClientResponse, Failure> {
        do {
            return .success(try await client.execute(request, timeout: .seconds(max(1, idleTimeout.components.seconds)), logger: logger))
        } catch let error as HTTPClientError where [HTTPClientError.deadlineExceeded, .connectTimeout, .readTimeout].contains(error) {
            return .failure(.timedOut("\(error)"))
        } catch {
            return .failure(.unreachable("\(error)"))
        }
    }

    /// The client's response: the backend's status and headers (hop-by-hop removed) and its body streamed through
    /// `rewriter` when there is one (which may end the stream early). `lease` is released when the body ends or the
    /// response is dropped.
    static func response(
        to upstream: HTTPClientResponse, method: HTTPRequest.Method, rewriter: SSEEndpointRewriter?, lease: ProxyLease,
        logger: Logger? = nil
    ) -> Response {
        let status = HTTPResponse.Status(code: Int(upstream.status.code), reasonPhrase: upstream.status.reasonPhrase)
        var headers = ProxyHeaders.downstream(from: upstream.headers)
        // Traefik and nginx flush event streams as they come; this tells any other buffering proxy to do the same.
        if rewriter != nil || upstream.headers.first(name: "content-type")?.hasPrefix("text/event-stream") == true {
            headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
        }
        if method == .head || status == .noContent || status == .notModified || (100..<200).contains(status.code) {
            if method == .head, let length = upstream.headers.first(name: "content-length") { headers[.contentLength] = length }
            lease.release()
            return Response(status: status, headers: headers)
        }
        let length = upstream.headers.first(name: "content-length").flatMap(Int.init)
        let upstreamBody = upstream.body
        let body = ResponseBody(contentLength: rewriter == nil ? length : nil) { writer in
            defer { lease.release() }
            var rewriter = rewriter
            for try await chunk in upstreamBody {
                if rewriter != nil {
                    let output = rewriter!.feed(chunk)
                    if output.readableBytes > 0 { try await writer.write(output) }
                    if let reason = rewriter!.endReason {
                        // Ending here drops the upstream body, which closes the backend's connection.
                        logger?.warning("proxy ended an SSE stream", metadata: ["reason": "\(reason)"])
                        break
                    }
                } else {
                    try await writer.write(chunk)
                }
            }
            if let rest = rewriter?.finish(), rest.readableBytes > 0 { try await writer.write(rest) }
            try await writer.finish(nil)
        }
        return Response(status: status, headers: headers, body: body)
    }

    /// A small JSON error answer from the proxy itself (502, 503, 504, 404 for an unknown session).
    static func errorResponse(_ status: HTTPResponse.Status, error: String, description: String, retryAfter: String? = nil) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        if let retryAfter { headers[.retryAfter] = retryAfter }
        let body = ByteBuffer(string: #"{"error":"\#(error)","error_description":"\#(description)"}"#)
        headers[.contentLength] = String(body.readableBytes)
        return Response(status: status, headers: headers, body: .init(byteBuffer: body))
    }
}
