#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import HTTPTypes

/// Header names `FastAuthRequestParser` treats specially, and the field names of the headers proxies send most,
/// made once instead of once per request.
enum FastAuthFieldName {
    /// A header whose presence changes how the request is framed or routed.
    enum Framing {
        case host, contentLength, transferEncoding, expect, upgrade, connection, none
    }

    static func framing(of name: UnsafeRawBufferPointer.SubSequence) -> Framing {
        switch name.count {
        case 4 where equalsIgnoringCase(name, "host"): .host
        case 6 where equalsIgnoringCase(name, "expect"): .expect
        case 7 where equalsIgnoringCase(name, "upgrade"): .upgrade
        case 10 where equalsIgnoringCase(name, "connection"): .connection
        case 14 where equalsIgnoringCase(name, "content-length"): .contentLength
        case 17 where equalsIgnoringCase(name, "transfer-encoding"): .transferEncoding
        default: .none
        }
    }

    /// The spellings Traefik (Go's canonical header case), nginx, Caddy and MCP clients send; a name spelled
    /// otherwise gets a field name of its own, so each field keeps the name exactly as received.
    private static let common: [(bytes: [UInt8], name: HTTPField.Name)] = [
        "X-Forwarded-Method", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Forwarded-Uri",
        "X-Forwarded-For", "X-Forwarded-Prefix", "X-Forwarded-Server", "X-Real-Ip", "Authorization", "X-Api-Key",
        "X-API-Key", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Content-Length", "Content-Type",
        "Connection", "Cookie", "Mcp-Protocol-Version", "Mcp-Session-Id", "Last-Event-Id", "Cache-Control",
    ].map { (Array($0.utf8), HTTPField.Name($0)!) }

    /// The field name for `bytes`, which the parser has checked to be a token; nil only if HTTPTypes disagrees.
    static func name(of bytes: UnsafeRawBufferPointer.SubSequence) -> HTTPField.Name? {
        guard let start = bytes.base.baseAddress.map({ $0 + bytes.startIndex }) else { return nil }
        for entry in common where entry.bytes.count == bytes.count {
            if entry.bytes.withUnsafeBytes({ memcmp($0.baseAddress!, start, bytes.count) == 0 }) { return entry.name }
        }
        return HTTPField.Name(String(decoding: bytes, as: UTF8.self))
    }

    /// Whether `bytes` spell `lowercase` in any letter case.
    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer.SubSequence, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        return zip(bytes, expected).allSatisfy { byte, lower in
            (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte) == lower
        }
    }
}
