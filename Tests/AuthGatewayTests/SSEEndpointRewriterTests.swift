import AuthGateway
import NIOCore
import Testing

@Suite("SSE endpoint rewriting")
struct SSEEndpointRewriterTests {
    static func rewriter(_ rewrite: @escaping SSEEndpointRewriter.Rewrite = { "/public" + $0 }, holdLimit: Int = SSEEndpointRewriter.defaultHoldLimit) -> SSEEndpointRewriter {
        SSEEndpointRewriter(holdLimit: holdLimit, rewrite: rewrite)
    }

    /// Feeds `input` in chunks of `size` bytes and returns everything written, in order.
    static func run(_ input: String, chunk size: Int, rewriter: SSEEndpointRewriter = rewriter()) -> String {
        var rewriter = rewriter
        var output = ""
        let bytes = Array(input.utf8)
        for start in stride(from: 0, to: bytes.count, by: size) {
            output += String(buffer: rewriter.feed(ByteBuffer(bytes: bytes[start..<min(start + size, bytes.count)])))
        }
        return output + String(buffer: rewriter.finish())
    }

    @Test("the endpoint event's URL is rewritten, whatever the chunking", arguments: [1, 2, 7, 1000])
    func endpointRewritten(_ chunk: Int) {
        let input = "event: endpoint\r\ndata: /mcp/messages/?session_id=abc\r\n\r\n"
        #expect(Self.run(input, chunk: chunk) == "event: endpoint\r\ndata: /public/mcp/messages/?session_id=abc\r\n\r\n")
    }

    @Test("other events pass through byte for byte", arguments: [
        "event: message\ndata: {\"a\":1}\n\n",
        ": ping - 2026-01-01\r\n\r\n",
        "data: line one\ndata: line two\nid: 7\n\n",
        "event: message\r\ndata: endpoint\r\n\r\n",
        "retry: 3000\n\n\n",
    ])
    func othersUnchanged(_ input: String) {
        #expect(Self.run(input, chunk: 3) == input)
    }

    @Test("an event is released as soon as its blank line arrives, before the next event")
    func noBufferingAcrossEvents() {
        var rewriter = Self.rewriter()
        let first = rewriter.feed(ByteBuffer(string: "event: message\ndata: 1\n\nevent: mess"))
        #expect(String(buffer: first) == "event: message\ndata: 1\n\n")
    }

    @Test("finding E: an endpoint event the rewrite cannot route back ends the stream")
    func refusedEndsStream() {
        let input = "event: message\ndata: 1\n\nevent: endpoint\ndata: http://elsewhere/x\n\nevent: message\ndata: 2\n\n"
        var rewriter = Self.rewriter({ _ in nil })
        #expect(String(buffer: rewriter.feed(ByteBuffer(string: input))) == "event: message\ndata: 1\n\n")
        #expect(rewriter.isEnded)
        #expect(rewriter.feed(ByteBuffer(string: "event: message\ndata: 3\n\n")).readableBytes == 0)
    }

    @Test("data before the event line and multi-line data are handled")
    func fieldOrder() {
        let input = "data: /mcp/messages/?session_id=1\nevent: endpoint\n\n"
        #expect(Self.run(input, chunk: 4) == "data: /public/mcp/messages/?session_id=1\nevent: endpoint\n\n")
    }

    @Test("an event larger than the hold limit streams through unchanged and the stream recovers after it")
    func oversized() {
        let big = "event: message\ndata: " + String(repeating: "x", count: 100) + "\n\n"
        let input = big + "event: endpoint\ndata: /m?session_id=2\n\n"
        var rewriter = Self.rewriter(holdLimit: 48)  // the endpoint event below is 38 bytes
        let early = rewriter.feed(ByteBuffer(string: String(big.prefix(60))))
        #expect(String(buffer: early) == String(big.prefix(60)), "an oversized event must not wait for its end")
        let rest = rewriter.feed(ByteBuffer(string: String(input.dropFirst(60))))
        #expect(String(buffer: rest) == String(big.dropFirst(60)) + "event: endpoint\ndata: /public/m?session_id=2\n\n")
    }

    @Test("an unterminated event is flushed as it came when upstream ends, never rewritten")
    func unterminated() {
        #expect(Self.run("event: message\ndata: 3", chunk: 4) == "event: message\ndata: 3")
    }

    @Test("finding E: an unterminated endpoint event is withheld when upstream ends")
    func unterminatedEndpoint() {
        #expect(Self.run("event: endpoint\ndata: /m?session_id=3", chunk: 4) == "")
    }

    @Test("a replacement with a line break is refused (it would inject an event)")
    func injectedLineBreak() {
        let input = "event: endpoint\ndata: /m\n\n"
        #expect(Self.run(input, chunk: 100, rewriter: Self.rewriter({ _ in "/x\n\nevent: message" })) == "")
    }
}
