import HTTPTypes
import NIOCore

/// A decision endpoint's answer (status, headers, optional body), in the form both HTTP paths can write.
struct AuthAnswer: Sendable {
    var head: HTTPResponse
    var body: ByteBuffer?

    init(head: HTTPResponse, body: ByteBuffer?) {
        self.head = head
        self.body = body
    }

    /// A denial: JSON body, `no-store`, and the challenge and `Retry-After` when the denial has them.
    init(_ rendered: DenialResponse) {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        if let challenge = rendered.challenge { headers[.wwwAuthenticate] = challenge }
        if let retryAfter = rendered.retryAfter { headers[.retryAfter] = retryAfter }
        let body = ByteBuffer(string: rendered.body)
        headers[.contentLength] = String(body.readableBytes)
        self.init(head: HTTPResponse(status: .init(code: rendered.status), headerFields: headers), body: body)
    }
}
