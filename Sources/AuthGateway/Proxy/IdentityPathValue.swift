/// The check an identity value (subject, client) must pass before it is written into an upstream path.
///
/// A path-style backend believes whatever the path says, so a value that could change which path segment it
/// lands in (`/`, `\`, `..`), be decoded into something else (`%`) or split the request (control characters) is
/// refused outright rather than escaped: refusing cannot be undone by a backend that decodes twice.
public enum IdentityPathValue {
    /// The longest value accepted, in UTF-8 bytes; identity values are names, not documents.
    public static let maximumLength = 256

    /// Why a value cannot go into a path.
    public enum Problem: String, Error, Sendable, Equatable {
        case empty = "is empty"
        case tooLong = "is longer than 256 bytes"
        case slash = "contains '/' or '\\\\'"
        case dotDot = "contains '..' or is '.'"
        case percent = "contains '%'"
        case control = "contains a control character"
    }

    /// The problem with `value`, or nil when it may be written into a path segment.
    public static func problem(with value: String) -> Problem? {
        if value.isEmpty { return .empty }
        if value.utf8.count > maximumLength { return .tooLong }
        if value == "." || value.contains("..") { return .dotDot }
        for scalar in value.unicodeScalars {
            switch scalar {
            case "/", "\\": return .slash
            case "%": return .percent
            default:
                // C0, DEL and C1 controls, plus the Unicode line and paragraph separators.
                if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029 {
                    return .control
                }
            }
        }
        return nil
    }

    /// The value as one path segment: every byte outside RFC 3986 `pchar` (unreserved, sub-delims, `:`, `@`) is
    /// percent-encoded, so `?`, `#` or a space can never end the path early.
    static func encodedSegment(_ value: String) -> String {
        var encoded = ""
        encoded.reserveCapacity(value.utf8.count)
        for byte in value.utf8 {
            if isPathCharacter(byte) {
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                encoded += "%" + String(byte >> 4, radix: 16, uppercase: true) + String(byte & 0xF, radix: 16, uppercase: true)
            }
        }
        return encoded
    }

    static func isPathCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"): true
        case UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: ":"),
            UInt8(ascii: "@"):
            true
        default: false
        }
    }
}
