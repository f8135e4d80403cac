import AuthGateway
import NIOCore
import Testing

/// Finding E: every SSE spelling a client reads as an `endpoint` event is either rewritten or never reaches the
/// client. The output is read back with an event-stream parser written to the WHATWG rules (the MCP SDK's view).
@Suite("Finding E: SSE spellings of the endpoint event")
struct FindingESSESpellingTests {
    /// The events a spec-following client dispatches from `bytes`: one leading BOM skipped, lines ending at CR, LF
    /// or CRLF, dispatch at each blank line, nothing for an unterminated event.
    static func clientEvents(_ bytes: [UInt8]) -> [(type: String, data: String)] {
        var bytes = bytes[...]
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
        var events: [(String, String)] = []
        var type = ""
        var data: [String] = []
        var line: [UInt8] = []
        var previous: UInt8 = 0
        for byte in bytes {
            defer { previous = byte }
            guard byte == 0x0D || byte == 0x0A else {
                line.append(byte)
                continue
            }
            if byte == 0x0A, previous == 0x0D { continue }
            if line.isEmpty {
                if !data.isEmpty { events.append((type.isEmpty ? "message" : type, data.joined(separator: "\n"))) }
                type = ""
                data = []
            } else if line.first != UInt8(ascii: ":") {
                let colon = line.firstIndex(of: UInt8(ascii: ":")) ?? line.endIndex
                var value = colon < line.endIndex ? line[(colon + 1)...] : []
                if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
                let name = String(decoding: line[..<colon], as: UTF8.self)
                if name == "event" { type = String(decoding: value, as: UTF8.self) }
                if name == "data" { data.append(String(decoding: value, as: UTF8.self)) }
            }
            line = []
        }
        return events
    }

    /// Feeds `input` in chunks of `size` and returns all output and whether the rewriter ended the stream.
    static func run(_ input: [UInt8], chunk size: Int, holdLimit: Int = 48) -> (output: [UInt8], ended: Bool) {
        var rewriter = SSEEndpointRewriter(holdLimit: holdLimit) { "/public" + $0 }
        var output: [UInt8] = []
        for start in stride(from: 0, to: input.count, by: size) {
            let produced = rewriter.feed(ByteBuffer(bytes: input[start..<min(start + size, input.count)]))
            output += produced.readableBytesView
            if rewriter.isEnded { return (output, true) }
        }
        output += rewriter.finish().readableBytesView
        return (output, rewriter.isEnded)
    }

    static let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
    static let padding = String(repeating: "x", count: 100)

    /// Spellings a client reads as an endpoint event the rewriter must rewrite (the event is small).
    static let rewritten: [(String, [UInt8])] = [
        ("lone CR", Array("event: endpoint\rdata: /m?session_id=1\r\r".utf8)),
        ("CRLF", Array("event: endpoint\r\ndata: /m?session_id=1\r\n\r\n".utf8)),
        ("mixed", Array("event: endpoint\rdata: /m?session_id=1\n\r\n".utf8)),
        ("no space", Array("event:endpoint\ndata:/m?session_id=1\n\n".utf8)),
        ("leading BOM", bom + Array("event: endpoint\ndata: /m?session_id=1\n\n".utf8)),
        ("leading BOM, lone CR", bom + Array("event: endpoint\rdata: /m?session_id=1\r\r".utf8)),
        ("after a message, lone CR", Array("data: hi\r\revent: endpoint\rdata: /m?session_id=1\r\r".utf8)),
        ("comment with CR inside", Array(": c\revent: endpoint\rdata: /m?session_id=1\r\r".utf8)),
    ]

    @Test("finding E: CR, CRLF and BOM spellings of the endpoint event are rewritten, whatever the chunking",
          arguments: rewritten.indices, [1, 2, 3, 1000])
    func spellingsRewritten(_ index: Int, _ chunk: Int) {
        let (name, input) = Self.rewritten[index]
        let (output, ended) = Self.run(input, chunk: chunk)
        let endpoints = Self.clientEvents(output).filter { $0.type == "endpoint" }.map(\.data)
        #expect(endpoints == ["/public/m?session_id=1"], "\(name), chunk \(chunk): \(String(decoding: output, as: UTF8.self).debugDescription)")
        #expect(!ended, "\(name)")
    }

    /// Endpoint events over the hold limit (48 bytes here): the stream ends and the client never sees them.
    static let oversized: [(String, [UInt8])] = [
        ("event line first", Array("event: endpoint\ndata: /m?session_id=1&pad=\(padding)\n\n".utf8)),
        ("event line last", Array("data: /m?session_id=1&pad=\(padding)\nevent: endpoint\n\n".utf8)),
        ("event line last, lone CR", Array("data: /m?session_id=1&pad=\(padding)\revent: endpoint\r\r".utf8)),
        ("event line after a long comment", Array(": \(padding)\nevent:endpoint\ndata: /m?session_id=1\n\n".utf8)),
        ("after a BOM", bom + Array("data: /m?session_id=1&pad=\(padding)\r\nevent: endpoint\r\n\r\n".utf8)),
    ]

    @Test("finding E: an endpoint event over the hold limit ends the stream before the client can dispatch it",
          arguments: oversized.indices, [1, 5, 1000])
    func oversizedEnds(_ index: Int, _ chunk: Int) {
        let (name, input) = Self.oversized[index]
        let (output, ended) = Self.run(input, chunk: chunk)
        #expect(Self.clientEvents(output + Array("\n\n".utf8)).allSatisfy { $0.type != "endpoint" }, "\(name), chunk \(chunk)")
        #expect(ended, "\(name), chunk \(chunk)")
    }

    @Test("finding E: a large message event still streams through whole, and a CRLF split across chunks is one line end",
          arguments: [1, 7, 1000])
    func largeMessagePasses(_ chunk: Int) {
        let input = Array("event: message\r\ndata: \(Self.padding)\r\n\r\nevent: endpoint\r\ndata: /m?session_id=2\r\n\r\n".utf8)
        let (output, ended) = Self.run(input, chunk: chunk)
        let events = Self.clientEvents(output)
        #expect(!ended)
        #expect(events.map(\.type) == ["message", "endpoint"])
        #expect(events.first?.data == Self.padding)
        #expect(events.last?.data == "/public/m?session_id=2")
    }
}
