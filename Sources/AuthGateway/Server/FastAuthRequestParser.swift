import HTTPTypes

/// A decision request read straight from a connection's bytes: what the decision needs of its head.
struct FastAuthRequest {
    var method: HTTPRequest.Method
    /// The request target as received (origin form: path and query).
    var target: String
    /// The first `Host` header, which HTTP/1 → HTTPTypes conversion turns into the authority.
    var authority: String?
    /// Every other header field, in order, as the HTTP/1 codec would have passed them on.
    var headerFields: HTTPFields
    var endpoint: FastAuthHandler.Endpoint
    /// `Connection: close` was asked for: the answer ends the connection's output.
    var asksToClose: Bool
}

/// Reads the head of a decision request (`/auth`, `/envoy/auth/**`) from raw HTTP/1.1 bytes, and recognises
/// everything else so that SwiftNIO's HTTP/1 codec can take the connection over.
///
/// Traefik's forwardAuth calls are all alike: an HTTP/1.1 request line, a dozen header lines, no body. Running them
/// through llhttp, `HTTPHeaders`, the HTTPTypes conversion (which parses every target as a URL) and three channel
/// handlers cost more than the decision. This parser accepts only that common shape and answers `.other` for
/// anything it does not fully understand (another endpoint or method, another HTTP version, a body or
/// `Transfer-Encoding`, `Expect`, `Upgrade`, folded or malformed lines, oversized heads), so every unusual request is
/// parsed, limited and refused by NIO exactly as before; request smuggling needs two parsers to disagree on where a
/// request ends, and here a request is answered only when its end is beyond doubt.
enum FastAuthRequestParser {
    /// What the bytes at the start of a connection's buffer are.
    enum Outcome {
        /// A whole decision request head of `length` bytes.
        case request(FastAuthRequest, length: Int)
        /// The start of what may be a decision request; more bytes are needed.
        case incomplete
        /// Not a request this parser answers: hand the connection to the HTTP codec.
        case other
    }

    /// Longer heads go to NIO's decoder, which applies the configured limits and refuses them properly.
    static let maximumHeadLength = 16 * 1024
    /// More header lines than this go to NIO's decoder too.
    static let maximumFieldCount = 100

    /// Each decision method with the space after it.
    private static let methods: [(bytes: [UInt8], method: HTTPRequest.Method)] = AuthEndpoint.methods.map {
        (Array($0.rawValue.utf8) + [UInt8(ascii: " ")], $0)
    }
    private static let forwardAuthPath = Array("/auth".utf8)
    private static let forwardAuthPathEnds: [UInt8] = [UInt8(ascii: " "), UInt8(ascii: "?")]
    private static let envoyPath = Array(EnvoyAuthEndpoint.prefix.utf8)
    private static let envoyPathEnds: [UInt8] = [UInt8(ascii: " "), UInt8(ascii: "?"), UInt8(ascii: "/")]
    private static let version = Array(" HTTP/1.1\r\n".utf8)

    /// RFC 9110 `tchar`.
    @inline(__always)
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "!"), UInt8(ascii: "#")...UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"),
            UInt8(ascii: "."), UInt8(ascii: "^")...UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    static func parse(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        var cursor = Cursor(bytes: bytes)
        guard let (method, endpoint, target) = cursor.requestLine() else {
            return cursor.ranOut && bytes.count < maximumHeadLength ? .incomplete : .other
        }
        var fields = HTTPFields()
        // A forwardAuth call has a dozen fields: one allocation instead of the array doubling five times.
        fields.reserveCapacity(16)
        var authority: String?
        var asksToClose = false
        var count = 0
        while true {
            guard let line = cursor.fieldLine() else {
                return cursor.ranOut && bytes.count < maximumHeadLength ? .incomplete : .other
            }
            guard let (name, value) = line else { break }
            count += 1
            guard count <= maximumFieldCount else { return .other }
            switch FastAuthFieldName.framing(of: name) {
            case .host where authority == nil:
                authority = string(value)
                continue
            case .contentLength:
                // A body would have to be read past; only an explicit empty one stays here. NIO refuses a tab after
                // the number and reads only spaces around `close`: a value with a tab goes to NIO, here and below.
                guard !cursor.valueHadTab, value.count == 1, value[value.startIndex] == UInt8(ascii: "0"),
                    !fields.contains(where: { $0.name == .contentLength })
                else { return .other }
            case .transferEncoding, .expect, .upgrade:
                return .other
            case .connection:
                guard !cursor.valueHadTab, let close = closeAsked(by: value) else { return .other }
                asksToClose = asksToClose || close
            default:
                break
            }
            guard let fieldName = FastAuthFieldName.name(of: name) else { return .other }
            fields.append(HTTPField(name: fieldName, value: string(value)))
        }
        guard cursor.position <= maximumHeadLength else { return .other }
        return .request(
            FastAuthRequest(
                method: method, target: target, authority: authority, headerFields: fields, endpoint: endpoint,
                asksToClose: asksToClose),
            length: cursor.position)
    }

    private static func string(_ bytes: UnsafeRawBufferPointer.SubSequence) -> String {
        String(decoding: bytes, as: UTF8.self)
    }

    /// Whether `Connection` asks to close; nil for a token that needs NIO (`upgrade` or anything unknown).
    private static func closeAsked(by value: UnsafeRawBufferPointer.SubSequence) -> Bool? {
        var close = false
        for token in value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: true) {
            let trimmed = Cursor.trimmed(token)
            if FastAuthFieldName.equalsIgnoringCase(trimmed, "close") {
                close = true
            } else if !FastAuthFieldName.equalsIgnoringCase(trimmed, "keep-alive") {
                return nil
            }
        }
        return close
    }

    /// Walks the bytes of one request head; every accessor returns nil on bytes it refuses, with `ranOut` set when
    /// the refusal is only that the bytes ended.
    private struct Cursor {
        let bytes: UnsafeRawBufferPointer
        var position = 0
        var ranOut = false
        /// Whether the value of the last field line read holds a tab (around it or inside).
        var valueHadTab = false

        init(bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
        }

        /// `METHOD SP target SP HTTP/1.1 CRLF` for a decision method and path; nil otherwise.
        mutating func requestLine() -> (HTTPRequest.Method, FastAuthHandler.Endpoint, String)? {
            guard let method = FastAuthRequestParser.methods.first(where: { startsWith($0.bytes) }) else { return nil }
            position += method.bytes.count
            let targetStart = position
            // Decide on the path as early as possible, so a request for another endpoint is handed over at once.
            let endpoint: FastAuthHandler.Endpoint
            if startsWith(FastAuthRequestParser.forwardAuthPath, then: FastAuthRequestParser.forwardAuthPathEnds) {
                endpoint = .forwardAuth
            } else if startsWith(FastAuthRequestParser.envoyPath, then: FastAuthRequestParser.envoyPathEnds) {
                endpoint = .envoy
            } else {
                return nil
            }
            while true {
                guard position < bytes.count else { return ranOutHere() }
                let byte = bytes[position]
                if byte == UInt8(ascii: " ") { break }
                guard byte > 0x20, byte < 0x7F else { return nil }
                position += 1
            }
            let target = String(decoding: bytes[targetStart..<position], as: UTF8.self)
            guard startsWith(FastAuthRequestParser.version) else { return nil }
            position += FastAuthRequestParser.version.count
            return (method.method, endpoint, target)
        }

        /// One `name: value CRLF` line; `.some(nil)` for the blank line that ends the head; nil when refused.
        mutating func fieldLine() -> (name: UnsafeRawBufferPointer.SubSequence, value: UnsafeRawBufferPointer.SubSequence)?? {
            guard position + 1 < bytes.count else { return ranOutHere() }
            if bytes[position] == UInt8(ascii: "\r") {
                guard bytes[position + 1] == UInt8(ascii: "\n") else { return nil }
                position += 2
                return .some(nil)
            }
            let nameStart = position
            while true {
                guard position < bytes.count else { return ranOutHere() }
                let byte = bytes[position]
                if byte == UInt8(ascii: ":") { break }
                // Also refuses a line starting with whitespace (obsolete folding) and a space before the colon.
                guard FastAuthRequestParser.isTokenByte(byte) else { return nil }
                position += 1
            }
            guard position > nameStart else { return nil }
            let name = bytes[nameStart..<position]
            position += 1
            let valueStart = position
            valueHadTab = false
            while true {
                guard position < bytes.count else { return ranOutHere() }
                let byte = bytes[position]
                if byte == UInt8(ascii: "\r") { break }
                if byte == 0x09 { valueHadTab = true }
                // Field content: visible ASCII, space, tab and obs-text; no bare LF, NUL or other controls.
                guard byte == 0x09 || (byte >= 0x20 && byte != 0x7F) else { return nil }
                position += 1
            }
            guard position + 1 < bytes.count else { return ranOutHere() }
            guard bytes[position + 1] == UInt8(ascii: "\n") else { return nil }
            let value = Self.trimmed(bytes[valueStart..<position])
            position += 2
            return .some((name, value))
        }

        private mutating func ranOutHere<T>() -> T? {
            ranOut = true
            return nil
        }

        /// Whether the bytes at `position` are `prefix`; sets `ranOut` when they could still become it.
        private mutating func startsWith(_ prefix: [UInt8]) -> Bool {
            let available = min(prefix.count, bytes.count - position)
            for offset in 0..<available where bytes[position + offset] != prefix[offset] { return false }
            if available < prefix.count {
                ranOut = true
                return false
            }
            return true
        }

        /// Whether the bytes at `position` are `prefix` followed by one of `then`.
        private mutating func startsWith(_ prefix: [UInt8], then: [UInt8]) -> Bool {
            guard startsWith(prefix) else { return false }
            guard position + prefix.count < bytes.count else {
                ranOut = true
                return false
            }
            return then.contains(bytes[position + prefix.count])
        }

        static func trimmed(_ bytes: UnsafeRawBufferPointer.SubSequence) -> UnsafeRawBufferPointer.SubSequence {
            var start = bytes.startIndex
            var end = bytes.endIndex
            while start < end, bytes[start] == 0x20 || bytes[start] == 0x09 { start += 1 }
            while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
            return bytes[start..<end]
        }
    }
}
