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
        guard trimmed[..<space].lowercased() == "bearer" else { return .malformed }
        let token = trimmed[space...].drop(while: { $0 == " " })
        let end = token.lastIndex(where: { $0 != " " }).map { token.index(after: $0) } ?? token.startIndex
        let credential = token[..<end]
        guard !credential.isEmpty, !credential.contains(" ") else { return .malformed }
        return .token(credential)
    }
}
