import HTTPTypes
import NIOCore
import NIOHTTP1

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

extension AuthAnswer {
    /// The answer as HTTP/1.1 bytes, exactly as NIO's response encoder writes them (status line, each field as
    /// `name: value`, blank line, body), with `date` appended last as Hummingbird does.
    ///
    /// The fast path writes these bytes below the HTTP codecs: converting to `HTTPResponseHead` and `HTTPHeaders`
    /// and back to bytes costs a tenth of an API-key answer's CPU.
    func http1Bytes(date: String, omitBody: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        let body = omitBody ? nil : self.body
        var buffer = allocator.buffer(capacity: 512 + (body?.readableBytes ?? 0))
        buffer.writeStaticString("HTTP/1.1 ")
        // NIO's status type fills in the standard reason phrase that `HTTPResponse.Status(code:)` leaves empty.
        let status = HTTPResponseStatus(statusCode: head.status.code, reasonPhrase: head.status.reasonPhrase)
        buffer.writeString(String(status.code))
        buffer.writeStaticString(" ")
        buffer.writeString(status.reasonPhrase)
        buffer.writeStaticString("\r\n")
        for field in head.headerFields {
            buffer.writeString(field.name.rawName)
            buffer.writeStaticString(": ")
            buffer.writeString(field.value)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("Date: ")
        buffer.writeString(date)
        buffer.writeStaticString("\r\n\r\n")
        if let body { buffer.writeImmutableBuffer(body) }
        return buffer
    }
}
