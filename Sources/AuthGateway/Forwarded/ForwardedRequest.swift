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
    /// The path exactly as the proxy forwarded it, still percent-encoded.
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
    public init(headers: HTTPFields, peer: IPAddress?, trustedProxies: [IPNetwork]) throws(Refusal) {
        guard trustedProxies.containsAddress(peer) else { throw .untrustedPeer(peer?.description ?? "unknown") }
        let method = try Self.single(Self.methodHeader, in: headers)
        guard !method.isEmpty, method.utf8.allSatisfy({ (65...90).contains($0) }) else {
            throw .malformed("X-Forwarded-Method", "not an upper-case method name")
        }
        let proto = try Self.single(Self.protoHeader, in: headers).lowercased()
        guard ["http", "https", "ws", "wss"].contains(proto) else { throw .malformed("X-Forwarded-Proto", "not http or https") }
        let rawHost = try Self.single(Self.hostHeader, in: headers)
        guard let host = Self.canonicalHost(rawHost) else { throw .malformed("X-Forwarded-Host", "not a host name") }
        let uri = try Self.single(Self.uriHeader, in: headers)
        let (path, query) = try Self.splitURI(uri)
        let segments = try Self.validatedSegments(of: path)
        let forwardedFor = try Self.single(Self.forHeader, in: headers)
        guard let last = forwardedFor.split(separator: ",").last.map({ $0.trimmingCharacters(in: .whitespaces) }),
            let client = IPAddress(last)
        else { throw .malformed("X-Forwarded-For", "not an IP address") }

        self.method = method
        self.proto = proto
        self.host = host
        self.path = path
        self.pathSegments = segments
        self.query = query
        self.clientAddress = client
        self.headers = headers
    }

    /// The value of a header that must appear exactly once and hold no comma list.
    private static func single(_ name: HTTPField.Name, in headers: HTTPFields) throws(Refusal) -> String {
        let values = headers[values: name]
        guard let value = values.first else { throw .missing(name.rawName) }
        guard values.count == 1 else { throw .repeated(name.rawName) }
        if name != forHeader && value.contains(",") { throw .repeated(name.rawName) }
        return value.trimmingCharacters(in: .whitespaces)
    }

    /// Lower-cases a host, drops a port and a trailing dot; nil when it is not a plausible host name or address.
    public static func canonicalHost(_ raw: String) -> String? {
        var host = Substring(raw.lowercased())
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let rest = host[host.index(after: close)...]
            guard rest.isEmpty || (rest.hasPrefix(":") && rest.dropFirst().allSatisfy(\.isNumber)) else { return nil }
            host = host[...close]
            return String(host)
        }
        if let colon = host.lastIndex(of: ":") {
            guard host[host.index(after: colon)...].allSatisfy(\.isNumber) else { return nil }
            host = host[..<colon]
        }
        if host.hasSuffix(".") { host = host.dropLast() }
        guard !host.isEmpty, host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }) else { return nil }
        return String(host)
    }

    private static func splitURI(_ uri: String) throws(Refusal) -> (String, String?) {
        guard uri.hasPrefix("/") else { throw .malformed("X-Forwarded-Uri", "does not start with '/'") }
        guard !uri.contains("#") else { throw .malformed("X-Forwarded-Uri", "contains a fragment") }
        guard uri.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f }) else {
            throw .malformed("X-Forwarded-Uri", "contains spaces, control or non-ASCII characters")
        }
        if let mark = uri.firstIndex(of: "?") {
            return (String(uri[..<mark]), String(uri[uri.index(after: mark)...]))
        }
        return (uri, nil)
    }

    /// Splits the path and refuses anything a backend could read differently from the gateway: dot segments,
    /// empty inner segments, invalid escapes, and encoded `/`, `\`, NUL or `.`.
    private static func validatedSegments(of path: String) throws(Refusal) -> [Substring] {
        let segments = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        for (index, segment) in segments.enumerated() {
            if segment == "." || segment == ".." { throw .malformed("X-Forwarded-Uri", "dot segment in path") }
            if segment.isEmpty && index != segments.count - 1 { throw .malformed("X-Forwarded-Uri", "empty path segment") }
            if segment.contains("\\") { throw .malformed("X-Forwarded-Uri", "backslash in path") }
            var bytes = segment.utf8.makeIterator()
            while let byte = bytes.next() {
                guard byte == UInt8(ascii: "%") else { continue }
                guard let high = bytes.next(), let low = bytes.next(), let value = PercentDecoding.hexValue(high, low) else {
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
        guard let text = String(validating: bytes, as: UTF8.self), !text.isEmpty, text != ".", text != ".." else { return nil }
        guard !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || $0 == "/" || $0 == "\\" || $0 == "%" }) else { return nil }
        return text
    }
}
