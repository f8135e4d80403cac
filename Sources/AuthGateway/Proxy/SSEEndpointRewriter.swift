import NIOCore

/// Rewrites the `endpoint` event of an SSE stream (the URL the client must POST its messages to) and passes
/// every other byte through unchanged.
///
/// It reads the stream as an SSE client does (WHATWG HTML §9.2.6): lines end at CR, LF or CRLF (a CRLF split
/// across two chunks is one line end), one leading BOM is not part of the first line, a line `event:endpoint` or
/// `event: endpoint` makes the event an endpoint event, and an event counts only at the blank line that ends it.
/// Events are held until that blank line (a client cannot act on one before it anyway), then go out as they came,
/// or rewritten when they announce the endpoint. An event larger than `holdLimit` streams through line by line
/// (MCP results can be large), except that a line naming the endpoint event ends the stream before the client can
/// see it or the blank line that would complete it. An endpoint event the rewrite refuses ends the stream too: a
/// malicious backend gets no spelling through that the client would read as an endpoint and this type would not.
public struct SSEEndpointRewriter: Sendable {
    /// Turns the announced upstream URL into the one the client should use; nil refuses it (the stream ends).
    public typealias Rewrite = @Sendable (String) -> String?

    public static let defaultHoldLimit = 64 * 1024

    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")
    private static let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
    /// The two lines that make an event an endpoint event (`event:` with its value, one leading space allowed).
    private static let endpointLines: [[UInt8]] = [Array("event:endpoint".utf8), Array("event: endpoint".utf8)]

    /// What a LF right after a CR belongs to: that CR already ended a line, so the LF is no line end of its own.
    private enum AfterCR {
        case none
        /// The CR ended a line of the held event: the LF joins the event.
        case held
        /// The CR went out (a passed-through event or line): so does the LF.
        case emit
        /// The CR ended an event that went out rewritten, with its own line ends: the LF is dropped.
        case drop
    }

    /// An oversized event being streamed through.
    private struct Passthrough {
        /// The start of the current line while it may still be an endpoint line (held back); nil once it cannot.
        var lineHead: [UInt8]? = []
        var lineLength = 0
    }

    private enum Outcome {
        case asReceived
        case rewritten([UInt8])
        case refused(String)
    }

    private let rewrite: Rewrite
    private let holdLimit: Int
    /// The bytes of the event being held.
    private var event: [UInt8] = []
    /// Where the current (incomplete) line starts in `event`.
    private var lineStart = 0
    private var afterCR = AfterCR.none
    private var passthrough: Passthrough?
    /// The first bytes of the stream while they may still be a BOM; nil once decided.
    private var streamStart: [UInt8]? = []
    /// Why the stream was ended; once set, nothing more goes out.
    public private(set) var endReason: String?

    public init(holdLimit: Int = defaultHoldLimit, rewrite: @escaping Rewrite) {
        self.holdLimit = holdLimit
        self.rewrite = rewrite
    }

    /// True once the stream must end: the caller stops reading upstream and ends the client's stream.
    public var isEnded: Bool { endReason != nil }

    /// Feeds a chunk from upstream; returns the bytes to send to the client now (possibly none).
    public mutating func feed(_ chunk: ByteBuffer) -> ByteBuffer {
        var output = ByteBuffer()
        for byte in chunk.readableBytesView {
            guard !isEnded else { break }
            if var start = streamStart {
                // The BOM goes out as it came: the client skips it just as this reader does, so both read the
                // same first line (stripping it here would let the client strip a second one).
                start.append(byte)
                if Self.bom.starts(with: start) {
                    streamStart = start
                    if start.count == Self.bom.count {
                        output.writeBytes(start)
                        streamStart = nil
                    }
                    continue
                }
                streamStart = nil
                for held in start where !isEnded { process(held, into: &output) }
                continue
            }
            process(byte, into: &output)
        }
        return output
    }

    /// The bytes still held when upstream ends: an unterminated event, which no client dispatches, sent as it came
    /// unless it names the endpoint event (then withheld, in case a lenient client dispatches at end of stream).
    public mutating func finish() -> ByteBuffer {
        defer {
            event.removeAll()
            streamStart = nil
        }
        if isEnded || passthrough != nil { return ByteBuffer() }
        if let start = streamStart { return ByteBuffer(bytes: start) }
        return Self.lines(of: event).contains(where: Self.isEndpointLine) ? ByteBuffer() : ByteBuffer(bytes: event)
    }

    private mutating func process(_ byte: UInt8, into output: inout ByteBuffer) {
        if byte == Self.lf, afterCR != .none {
            switch afterCR {
            case .held:
                event.append(byte)
                lineStart = event.count
            case .emit: output.writeInteger(byte)
            case .drop, .none: break
            }
            afterCR = .none
            return
        }
        afterCR = .none
        if passthrough != nil {
            passThrough(byte, into: &output)
            return
        }
        event.append(byte)
        if byte == Self.cr || byte == Self.lf {
            if event.count - 1 == lineStart {
                let outcome = completedEvent()
                switch outcome {
                case .asReceived: output.writeBytes(event)
                case .rewritten(let bytes): output.writeBytes(bytes)
                case .refused(let reason): endReason = reason
                }
                if byte == Self.cr, case .rewritten = outcome { afterCR = .drop } else if byte == Self.cr { afterCR = .emit }
                event.removeAll(keepingCapacity: true)
                lineStart = 0
            } else {
                lineStart = event.count
                if byte == Self.cr { afterCR = .held }
            }
        } else if event.count > holdLimit {
            startPassthrough(into: &output)
        }
    }

    /// The held event outgrew the limit: its complete lines go out (unless one names the endpoint event), and the
    /// rest of it streams through.
    private mutating func startPassthrough(into output: inout ByteBuffer) {
        let complete = Array(event[..<lineStart])
        let partial = Array(event[lineStart...])
        event.removeAll(keepingCapacity: false)
        lineStart = 0
        if Self.lines(of: complete).contains(where: Self.isEndpointLine) {
            endReason = "an event over the hold limit names the endpoint event"
            return
        }
        output.writeBytes(complete)
        passthrough = Passthrough()
        for byte in partial where !isEnded { passThrough(byte, into: &output) }
    }

    private mutating func passThrough(_ byte: UInt8, into output: inout ByteBuffer) {
        guard var state = passthrough else { return }
        if byte == Self.cr || byte == Self.lf {
            if byte == Self.cr { afterCR = .emit }
            if state.lineLength == 0 {
                // The blank line that ends the oversized event: back to holding events.
                output.writeInteger(byte)
                passthrough = nil
                return
            }
            if let head = state.lineHead {
                if Self.isEndpointLine(head) {
                    endReason = "an event over the hold limit names the endpoint event"
                    return
                }
                output.writeBytes(head)
            }
            output.writeInteger(byte)
            state = Passthrough()
        } else {
            state.lineLength += 1
            if var head = state.lineHead {
                head.append(byte)
                if Self.endpointLines.contains(where: { $0.starts(with: head) }) {
                    state.lineHead = head
                } else {
                    output.writeBytes(head)
                    state.lineHead = nil
                }
            } else {
                output.writeInteger(byte)
            }
        }
        passthrough = state
    }

    /// What becomes of the held event: as received, rewritten when it announces the endpoint, or refused.
    private func completedEvent() -> Outcome {
        let lines = Self.lines(of: event)
        guard lines.contains(where: Self.isEndpointLine) else { return .asReceived }
        let data = lines.compactMap { line -> String? in
            guard let (name, value) = Self.field(line), name == Array("data".utf8) else { return nil }
            return String(decoding: value, as: UTF8.self)
        }.joined(separator: "\n")
        guard let replacement = rewrite(data) else { return .refused("the backend announced a message URL the proxy cannot route back") }
        guard !replacement.utf8.contains(where: { $0 == Self.lf || $0 == Self.cr }) else {
            return .refused("the rewritten message URL contains a line break")
        }
        let newline: [UInt8] = event.contains(Self.cr) ? [Self.cr, Self.lf] : [Self.lf]
        var rewritten: [UInt8] = []
        var wroteData = false
        for line in lines {
            if Self.field(line)?.name == Array("data".utf8) {
                guard !wroteData else { continue }
                wroteData = true
                rewritten += Array("data: \(replacement)".utf8) + newline
            } else {
                rewritten += line + newline
            }
        }
        return .rewritten(rewritten + newline)
    }

    private static func isEndpointLine(_ line: [UInt8]) -> Bool { endpointLines.contains(line) }

    /// The non-empty lines of `bytes`, split at CR, LF or CRLF, without their terminators.
    private static func lines(of bytes: [UInt8]) -> [[UInt8]] {
        var lines: [[UInt8]] = []
        var current: [UInt8] = []
        var previous: UInt8 = 0
        for byte in bytes {
            if byte == cr || byte == lf {
                if !(byte == lf && previous == cr), !current.isEmpty { lines.append(current) }
                current.removeAll(keepingCapacity: true)
            } else {
                current.append(byte)
            }
            previous = byte
        }
        if !current.isEmpty { lines.append(current) }
        return lines
    }

    /// A line's field name and value (one leading space of the value removed), or nil for a comment.
    private static func field(_ line: [UInt8]) -> (name: [UInt8], value: ArraySlice<UInt8>)? {
        guard line.first != UInt8(ascii: ":") else { return nil }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return (line, []) }
        var value = line[(colon + 1)...]
        if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        return (Array(line[..<colon]), value)
    }
}
