import Foundation

/// The parameters of an OAuth request (query string or form body), with repeats remembered: RFC 6749 §3.1 says a
/// parameter must not appear more than once, and taking the first or the last would let two parties disagree.
struct OAuthParameters: Sendable {
    private(set) var values: [String: String] = [:]
    private(set) var repeated: [String] = []

    init(encoded: String) {
        for pair in encoded.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = Self.decode(parts[0]), !name.isEmpty else { continue }
            let value = parts.count > 1 ? Self.decode(parts[1]) ?? "" : ""
            if values[name] != nil { repeated.append(name) }
            values[name] = value
        }
    }

    init(_ values: [String: String]) {
        self.values = values
    }

    /// The value, with an empty value treated as absent (RFC 6749 §3.1).
    subscript(_ name: String) -> String? {
        guard let value = values[name], !value.isEmpty else { return nil }
        return value
    }

    /// `application/x-www-form-urlencoded` decoding: `+` is a space, then percent-decoding.
    private static func decode(_ text: some StringProtocol) -> String? {
        text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }

    /// Encodes name/value pairs for a query string or form body.
    static func encode(_ pairs: [(String, String)]) -> String {
        pairs.map { "\(escape($0.0))=\(escape($0.1))" }.joined(separator: "&")
    }

    static func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }

    private static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
}
