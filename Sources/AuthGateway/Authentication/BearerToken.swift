import HTTPTypes

/// Extracts the credential of an `Authorization: Bearer <token>` header (RFC 6750 §2.1).
enum BearerToken {
    /// The outcome of reading the `Authorization` header.
    enum Reading: Equatable {
        case none
        case token(Substring)
        /// Present but not a usable bearer credential (other scheme, empty token, repeated header).
        case malformed
    }

    static func read(from headers: HTTPFields) -> Reading {
        let values = headers[values: .authorization]
        guard let value = values.first else { return .none }
        guard values.count == 1 else { return .malformed }
        let trimmed = value.drop(while: { $0 == " " })
        guard let space = trimmed.firstIndex(of: " ") else { return .malformed }
        guard isBearerScheme(trimmed[..<space]) else { return .malformed }
        let token = trimmed[space...].drop(while: { $0 == " " })
        let end = token.lastIndex(where: { $0 != " " }).map { token.index(after: $0) } ?? token.startIndex
        let credential = token[..<end]
        // Bytes, not `contains(" ")`: with Foundation imported anywhere that resolves to a bridged NSString search,
        // which profiling showed as the most expensive step of a cached JWT decision.
        guard !credential.isEmpty, !credential.utf8Contains(UInt8(ascii: " ")) else { return .malformed }
        return .token(credential)
    }

    /// `Bearer` in any case (RFC 6750 §2.1, RFC 9110 §11.1), compared as ASCII bytes: no other character lowercases
    /// to one of these letters, so this is the same test as `lowercased() == "bearer"` without building a string.
    static func isBearerScheme(_ scheme: Substring) -> Bool {
        scheme.utf8.count == 6 && zip(scheme.utf8, "bearer".utf8).allSatisfy { $0 | 0x20 == $1 }
    }
}
