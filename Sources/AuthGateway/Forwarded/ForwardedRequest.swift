import HTTPTypes

/// The original client request as described by a trusted proxy's `X-Forwarded-*` headers.
///
/// Built only from a peer in `trusted_proxies`; every ambiguity (a missing or repeated header, a comma list, an
/// encoded slash or dot segment in the path) is a refusal, never a default.
public struct ForwardedRequest: Sendable {
    public let method: String
    public let proto: String
    /// Lower-case host without port or trailing dot.
    public let host: String
    /// The path as the proxy forwarded it, still percent-encoded but normalised (RFC 3986 §6.2.2): escapes of
    /// unreserved characters decoded, the other escapes in upper case. Every spelling Traefik or a backend reads as
    /// the same path is this one string, so routes, captures and the proxy all see one value.
    public let path: String
    /// The path split on `/`, without the leading empty segment.
    public let pathSegments: [Substring]
    public let query: String?
    /// The original client's address (the right-most `X-Forwarded-For` entry, which the trusted proxy wrote).
    public let clientAddress: IPAddress?
    /// All headers of the auth request, where credentials are found.
    public let headers: HTTPFields

    /// Why forwarded metadata was refused.
    public enum Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        case untrustedPeer(String)
        case missing(String)
        case repeated(String)
        case malformed(String, String)

        public var description: String {
            switch self {
            case .untrustedPeer(let peer): "peer \(peer) is not a trusted proxy"
            case .missing(let name): "missing \(name)"
            case .repeated(let name): "\(name) appears more than once"
            case .malformed(let name, let why): "malformed \(name): \(why)"
            }
        }
    }

    static let methodHeader = HTTPField.Name("X-Forwarded-Method")!
    static let protoHeader = HTTPField.Name("X-Forwarded-Proto")!
    static let hostHeader = HTTPField.Name("X-Forwarded-Host")!
    static let uriHeader = HTTPField.Name("X-Forwarded-Uri")!
    static let forHeader = HTTPField.Name("X-Forwarded-For")!

    /// Reads the forwarded request from `headers` sent by `peer`.
    ///
    /// Runs on every forwardAuth call, so it works on UTF-8 bytes: no Foundation string search, no Unicode
    /// character classification (every accepted byte is ASCII anyway).
    public init(headers: HTTPFields, peer: IPAddress?, trustedProxies: [IPNetwork]) throws(Refusal) {
        guard trustedProxies.containsAddress(peer) else { throw .untrustedPeer(peer?.description ?? "unknown") }
        let method = try Self.single(Self.methodHeader, in: headers)
        guard !method.isEmpty, method.utf8.allSatisfy({ (65...90).contains($0) }) else {
            throw .malformed("X-Forwarded-Method", "not an upper-case method name")
        }
        guard let proto = Self.canonicalProto(try Self.single(Self.protoHeader, in: headers)) else {
            throw .malformed("X-Forwarded-Proto", "not http or https")
        }
        let rawHost = try Self.single(Self.hostHeader, in: headers)
        guard let host = Self.canonicalHost(rawHost) else { throw .malformed("X-Forwarded-Host", "not a host name") }
        let uri = try Self.single(Self.uriHeader, in: headers)
        let (rawPath, query) = try Self.splitURI(uri)
        let (path, segments) = try Self.normalisedPath(rawPath)
        let forwardedFor = try Self.single(Self.forHeader, in: headers)
        let lastEntry = forwardedFor.utf8.lastIndex(of: UInt8(ascii: ",")).map { forwardedFor[forwardedFor.index(after: $0)...] } ?? forwardedFor[...]
        guard let client = IPAddress(Self.trimmed(lastEntry)) else { throw .malformed("X-Forwarded-For", "not an IP address") }

        self.method = method
        self.proto = proto
        self.host = host
        self.path = path
        self.pathSegments = segments
        self.query = query
        self.clientAddress = client
        self.headers = headers
    }

    /// A request whose parts were read and validated elsewhere (`init(direct:…)`).
    init(
        method: String, proto: String, host: String, path: String, pathSegments: [Substring], query: String?,
        clientAddress: IPAddress?, headers: HTTPFields
    ) {
        self.method = method
        self.proto = proto
        self.host = host
        self.path = path
        self.pathSegments = pathSegments
        self.query = query
        self.clientAddress = clientAddress
        self.headers = headers
    }

    /// The value of a header that must appear exactly once and hold no comma list.
    private static func single(_ name: HTTPField.Name, in headers: HTTPFields) throws(Refusal) -> String {
        // One pass without collecting the values into an array: five of these run on every forwardAuth call.
        var found: String?
        for field in headers where field.name == name {
            guard found == nil else { throw .repeated(name.rawName) }
            found = field.value
        }
        guard let value = found else { throw .missing(name.rawName) }
        if name != forHeader && value[...].utf8Contains(UInt8(ascii: ",")) { throw .repeated(name.rawName) }
        let trimmed = trimmed(value[...])
        return trimmed.utf8.count == value.utf8.count ? value : String(trimmed)
    }

    /// The value without leading and trailing spaces and tabs.
    static func trimmed(_ value: Substring) -> Substring {
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let first = value.utf8.firstIndex(where: { !isBlank($0) }), let last = value.utf8.lastIndex(where: { !isBlank($0) }) else {
            return value[value.endIndex...]
        }
        return value[first...last]
    }

    static func canonicalProto(_ raw: String) -> String? {
        switch raw {
        case "http", "HTTP": "http"
        case "https", "HTTPS": "https"
        case "ws", "WS": "ws"
        case "wss", "WSS": "wss"
        default: nil
        }
    }

    /// Lower-cases a host, drops a port and a trailing dot; nil when it is not a plausible host name or address.
    public static func canonicalHost(_ raw: String) -> String? {
        var bytes = Array(raw.utf8)
        for index in bytes.indices where (65...90).contains(bytes[index]) { bytes[index] += 32 }
        let isDigit = { (byte: UInt8) in (48...57).contains(byte) }
        if bytes.first == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")) else { return nil }
            let rest = bytes[(close + 1)...]
            guard rest.isEmpty || (rest.first == UInt8(ascii: ":") && rest.dropFirst().allSatisfy(isDigit)) else { return nil }
            return String(decoding: bytes[...close], as: UTF8.self)
        }
        if let colon = bytes.lastIndex(of: UInt8(ascii: ":")) {
            guard bytes[(colon + 1)...].allSatisfy(isDigit) else { return nil }
            bytes.removeSubrange(colon...)
        }
        if bytes.last == UInt8(ascii: ".") { bytes.removeLast() }
        let allowed = { (byte: UInt8) in (97...122).contains(byte) || isDigit(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") }
        guard !bytes.isEmpty, bytes.allSatisfy(allowed) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func splitURI(_ uri: String) throws(Refusal) -> (String, String?) {
        let bytes = uri.utf8
        guard bytes.first == UInt8(ascii: "/") else { throw .malformed("X-Forwarded-Uri", "does not start with '/'") }
        guard bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw .malformed("X-Forwarded-Uri", "contains spaces, control or non-ASCII characters")
        }
        guard !bytes.contains(UInt8(ascii: "#")) else { throw .malformed("X-Forwarded-Uri", "contains a fragment") }
        if let mark = bytes.firstIndex(of: UInt8(ascii: "?")) {
            return (String(uri[..<mark]), String(uri[uri.index(after: mark)...]))
        }
        return (uri, nil)
    }

    /// The normalised path and its segments; refuses anything a backend could read differently from the gateway:
    /// dot segments (also encoded ones), empty inner segments, invalid escapes, and encoded `/`, `\`, NUL or
    /// control characters.
    ///
    /// Percent-encoded unreserved characters (RFC 3986 §2.3: ALPHA DIGIT `-` `.` `_` `~`) are decoded (§6.2.2.2)
    /// and every other escape is upper-cased (§6.2.2.1), as Traefik's entrypoint does before routing, so
    /// `/ffmpeg/%61dmin` is `/ffmpeg/admin` for route matching and captures alike. A path without `%` is used as
    /// it is (no copy).
    static func normalisedPath(_ path: String) throws(Refusal) -> (path: String, segments: [Substring]) {
        let normalised = path[...].utf8Contains(UInt8(ascii: "%")) ? try decodingUnreserved(path) : path
        return (normalised, try validatedSegments(of: normalised))
    }

    /// `path` with unreserved escapes decoded and the others upper-cased; refuses invalid escapes and encoded
    /// separators or control characters. `splitURI` has already refused every non-ASCII byte.
    private static func decodingUnreserved(_ path: String) throws(Refusal) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(path.utf8.count)
        var iterator = path.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next(), let low = iterator.next(), let value = PercentDecoding.hexValue(high, low) else {
                throw .malformed("X-Forwarded-Uri", "invalid percent-encoding in path")
            }
            if value == 0x2F || value == 0x5C || value < 0x20 || value == 0x7F {
                throw .malformed("X-Forwarded-Uri", "encoded '/', '\\', NUL or control character in path")
            }
            if PercentDecoding.isUnreserved(value) {
                bytes.append(value)
            } else {
                bytes.append(UInt8(ascii: "%"))
                bytes.append(PercentDecoding.upperHexDigit(value >> 4))
                bytes.append(PercentDecoding.upperHexDigit(value & 0x0F))
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Splits an already normalised path (or one without escapes) and refuses dot segments, empty inner segments
    /// and backslashes. Also checks a backend's announced message path (`ProxyEndpoint`).
    static func validatedSegments(of path: String) throws(Refusal) -> [Substring] {
        var segments: [Substring] = []
        var start = path.utf8.index(after: path.utf8.startIndex)
        var index = start
        let end = path.utf8.endIndex
        while true {
            if index == end || path.utf8[index] == UInt8(ascii: "/") {
                segments.append(path[start..<index])
                if index == end { break }
                start = path.utf8.index(after: index)
            }
            index = path.utf8.index(after: index)
        }
        for (position, segment) in segments.enumerated() {
            let bytes = segment.utf8
            if bytes.elementsEqual(".".utf8) || bytes.elementsEqual("..".utf8) { throw .malformed("X-Forwarded-Uri", "dot segment in path") }
            if bytes.isEmpty && position != segments.count - 1 { throw .malformed("X-Forwarded-Uri", "empty path segment") }
            if segment.utf8Contains(UInt8(ascii: "\\")) { throw .malformed("X-Forwarded-Uri", "backslash in path") }
            guard segment.utf8Contains(UInt8(ascii: "%")) else { continue }
            // Escapes left by normalisation are valid; a path that was not normalised (an announced message path)
            // is checked here as before.
            var iterator = bytes.makeIterator()
            while let byte = iterator.next() {
                guard byte == UInt8(ascii: "%") else { continue }
                guard let high = iterator.next(), let low = iterator.next(), let value = PercentDecoding.hexValue(high, low) else {
                    throw .malformed("X-Forwarded-Uri", "invalid percent-encoding in path")
                }
                if value == 0x2F || value == 0x5C || value == 0x00 || value == 0x2E || value < 0x20 || value == 0x7F {
                    throw .malformed("X-Forwarded-Uri", "encoded '/', '\\', '.', NUL or control character in path")
                }
            }
        }
        return segments
    }
}

/// Percent-decoding for path captures, which must decode to valid UTF-8 without separators or control characters.
enum PercentDecoding {
    static func hexValue(_ high: UInt8, _ low: UInt8) -> UInt8? {
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 65...70: c - 55
            case 97...102: c - 87
            default: nil
            }
        }
        guard let h = nibble(high), let l = nibble(low) else { return nil }
        return h << 4 | l
    }

    /// RFC 3986 §2.3 unreserved: ALPHA DIGIT `-` `.` `_` `~`.
    static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"): true
        default: false
        }
    }

    static func upperHexDigit(_ nibble: UInt8) -> UInt8 { nibble < 10 ? 48 + nibble : 55 + nibble }

    /// Every escape of `text` decoded, as a backend that decodes the whole path reads it (invalid UTF-8 repaired).
    static func decodedText(_ text: Substring) -> String {
        guard text.utf8Contains(UInt8(ascii: "%")) else { return String(text) }
        let source = Array(text.utf8)
        var bytes: [UInt8] = []
        var index = 0
        while index < source.count {
            if source[index] == UInt8(ascii: "%"), index + 2 < source.count, let value = hexValue(source[index + 1], source[index + 2]) {
                bytes.append(value)
                index += 3
            } else {
                bytes.append(source[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The decoded value of one path segment, or nil when it is not safe to use as an identity.
    static func decodeCapture(_ segment: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = segment.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(), let value = hexValue(high, low) else { return nil }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self), !text.isEmpty, text != ".", text != "..",
            !IdentityValue.hasSurroundingWhitespace(text)
        else { return nil }
        guard !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || $0 == "/" || $0 == "\\" || $0 == "%" }) else { return nil }
        return text
    }
}
