import Foundation

/// The query of an SSE message URL, parsed once the way the backend parses it, and the one form the proxy forwards.
///
/// Python backends (Starlette's `parse_qsl`) split on `&`, skip empty pairs, read a pair without `=` as an empty
/// value, turn `+` into a space and percent-decode names and values; the last value of a repeated name wins. So
/// `session%5Fid=X` names the session as much as `session_id=X` does, and checking one spelling while forwarding
/// the raw query let a second spelling choose the session the backend serves (finding 4). Here every spelling is
/// decoded before the session is looked for, a query naming the session twice is refused, and upstream receives
/// the decoded pairs re-encoded (only RFC 3986 unreserved characters left bare), which parse back to exactly what
/// was checked.
struct MessageQuery: Equatable {
    /// Why a query is refused (400).
    enum Refusal: Error, Equatable {
        /// A name or value whose percent-encoding is malformed or does not decode to UTF-8.
        case malformedEncoding
        /// The session is named more than once (in any spelling, `session_id` or `sessionId`).
        case repeatedSession
    }

    /// The names MCP servers read the SSE session id from.
    static let sessionNames: Set<String> = ["session_id", "sessionId"]

    private static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    /// The decoded pairs, in order.
    let pairs: [(name: String, value: String)]

    init(parsing raw: String) throws(Refusal) {
        var pairs: [(name: String, value: String)] = []
        for piece in raw.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = piece.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = try Self.decode(parts[0])
            let value = parts.count == 2 ? try Self.decode(parts[1]) : ""
            pairs.append((name, value))
        }
        guard pairs.count(where: { Self.sessionNames.contains($0.name) }) <= 1 else { throw .repeatedSession }
        self.pairs = pairs
    }

    /// The session the query names; nil when it names none or names it with an empty value.
    var sessionID: String? {
        guard let value = pairs.first(where: { Self.sessionNames.contains($0.name) })?.value, !value.isEmpty else { return nil }
        return value
    }

    /// The query sent upstream: the checked pairs, each name and value percent-encoded.
    var serialized: String {
        pairs.map { Self.encode($0.name) + "=" + Self.encode($0.value) }.joined(separator: "&")
    }

    static func == (lhs: MessageQuery, rhs: MessageQuery) -> Bool {
        lhs.pairs.elementsEqual(rhs.pairs) { $0.name == $1.name && $0.value == $1.value }
    }

    private static func decode(_ text: Substring) throws(Refusal) -> String {
        guard let decoded = text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding else { throw .malformedEncoding }
        return decoded
    }

    private static func encode(_ text: String) -> String {
        // Every character outside the unreserved set is encoded, so this never fails.
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }
}
