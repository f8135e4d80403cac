import NIOCore

/// Rewrites the `endpoint` event of an SSE stream (the URL the client must POST its messages to) and passes
/// every other byte through unchanged.
///
/// It parses only as much as it must: bytes are held until the blank line that ends their event (a client cannot
/// act on an event before that line anyway), then the event goes out as it came, or rewritten when it is an
/// `endpoint` event. An event larger than `holdLimit` is not an endpoint announcement: it is released at once and
/// the rest of it streams through untouched. Lines end in LF or CRLF (what SSE servers send; a lone CR is data).
public struct SSEEndpointRewriter: Sendable {
    /// Turns the announced upstream URL into the one the client should use; nil drops the event.
    public typealias Rewrite = @Sendable (String) -> String?

    public static let defaultHoldLimit = 64 * 1024

    private let rewrite: Rewrite
    private let holdLimit: Int
    /// The bytes of the event being read.
    private var event: [UInt8] = []
    /// Where the current (incomplete) line starts in `event`.
    private var lineStart = 0
    /// Streaming an oversized event through: bytes since the last line feed, excluding CR, to see its blank line.
    private var passthroughLineLength: Int?

    public init(holdLimit: Int = defaultHoldLimit, rewrite: @escaping Rewrite) {
        self.holdLimit = holdLimit
        self.rewrite = rewrite
    }

    /// Feeds a chunk from upstream; returns the bytes to send to the client now (possibly none).
    public mutating func feed(_ chunk: ByteBuffer) -> ByteBuffer {
        var output = ByteBuffer()
        for byte in chunk.readableBytesView {
            if let length = passthroughLineLength {
                output.writeInteger(byte)
                if byte == UInt8(ascii: "\n") {
                    passthroughLineLength = length == 0 ? nil : 0  // a blank line ends the oversized event
                } else if byte != UInt8(ascii: "\r") {
                    passthroughLineLength = length + 1
                }
                continue
            }
            event.append(byte)
            if byte == UInt8(ascii: "\n") {
                var lineEnd = event.count - 1
                if lineEnd > lineStart, event[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
                if lineEnd == lineStart {
                    output.writeBytes(completedEvent())
                    event.removeAll(keepingCapacity: true)
                    lineStart = 0
                } else {
                    lineStart = event.count
                }
            } else if event.count > holdLimit {
                output.writeBytes(event)
                passthroughLineLength = event.count - lineStart - (event.last == UInt8(ascii: "\r") ? 1 : 0)
                event.removeAll(keepingCapacity: false)
                lineStart = 0
            }
        }
        return output
    }

    /// The bytes still held when upstream ends: an unterminated event, sent as it came (never an endpoint event,
    /// which only counts once terminated).
    public mutating func finish() -> ByteBuffer {
        defer { event.removeAll() }
        return ByteBuffer(bytes: event)
    }

    /// The held event, rewritten when it announces the endpoint.
    private func completedEvent() -> [UInt8] {
        let lines = Self.lines(of: event)
        guard lines.contains(where: { line in Self.field(line).map { $0.name == "event" && $0.value == "endpoint" } ?? false }) else {
            return event
        }
        let data = lines.compactMap { line -> String? in
            guard let (name, value) = Self.field(line), name == "data" else { return nil }
            return value
        }.joined(separator: "\n")
        guard let replacement = rewrite(data), !replacement.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D }) else { return [] }
        let newline: [UInt8] = event.contains(UInt8(ascii: "\r")) ? [0x0D, 0x0A] : [0x0A]
        var rewritten: [UInt8] = []
        var wroteData = false
        for line in lines {
            if Self.field(line)?.name == "data" {
                guard !wroteData else { continue }
                wroteData = true
                rewritten += Array("data: \(replacement)".utf8) + newline
            } else {
                rewritten += line + newline
            }
        }
        return rewritten + newline
    }

    /// The event's lines without their terminators (the final blank line excluded).
    private static func lines(of event: [UInt8]) -> [[UInt8]] {
        var lines: [[UInt8]] = []
        var current: [UInt8] = []
        for byte in event {
            if byte == UInt8(ascii: "\n") {
                if current.last == UInt8(ascii: "\r") { current.removeLast() }
                if !current.isEmpty { lines.append(current) }
                current.removeAll(keepingCapacity: true)
            } else {
                current.append(byte)
            }
        }
        return lines
    }

    /// A line's field name and value (one leading space of the value removed), or nil for a comment.
    private static func field(_ line: [UInt8]) -> (name: String, value: String)? {
        guard line.first != UInt8(ascii: ":") else { return nil }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return (String(decoding: line, as: UTF8.self), "") }
        var value = line[(colon + 1)...]
        if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        return (String(decoding: line[..<colon], as: UTF8.self), String(decoding: value, as: UTF8.self))
    }
}
