import Foundation
import HTTPTypes
import TokenStore

/// The `api_key` credential kind: an AuthGateway key in `Authorization: Bearer` or the configured key header.
public struct APIKeyAuthenticator: CredentialAuthenticator {
    public let kind = CredentialKind.apiKey
    let store: TokenStore
    let keyHeader: HTTPField.Name?
    let usage: LastUsedRecorder
    let cache: APIKeyCache

    public init(store: TokenStore, keyHeader: String?, usage: LastUsedRecorder) {
        self.init(store: store, keyHeader: keyHeader, usage: usage, cache: APIKeyCache())
    }

    init(store: TokenStore, keyHeader: String?, usage: LastUsedRecorder, cache: APIKeyCache) {
        self.store = store
        self.keyHeader = keyHeader.flatMap { HTTPField.Name($0) }
        self.usage = usage
        self.cache = cache
    }

    public func authenticate(_ request: ForwardedRequest, route: MatchedRoute) async -> AuthenticationOutcome {
        guard let candidate = candidate(in: request.headers) else { return .absent }
        guard let candidate = candidate, APIKeySecret.hasKeyShape(candidate) else {
            return .invalid(reason: "API key header holds something that is not an AuthGateway key")
        }
        let digest = APIKeySecret.digest(of: candidate)
        let key: APIKey?
        do {
            key = try await cache.value(for: digest, store: store) { try await store.findKey(digest: digest) }
        } catch {
            return .unavailable(reason: "token store lookup failed: \(error)")
        }
        guard let key else { return .invalid(reason: "unknown API key") }
        let now = Date()
        if let reason = key.unusableReason(at: now) { return .invalid(reason: "API key \(key.id) is \(reason.rawValue)") }
        usage.record(keyID: key.id, at: now)
        return .principal(
            Principal(
                subject: key.subject, method: .apiKey, scopes: key.scopeList, groups: [], client: key.name, issuer: "",
                keyID: key.id, restrictedToRoute: key.route))
    }

    /// nil: no API key in the request. `.some(nil)`: the key header is repeated, which is refused.
    private func candidate(in headers: HTTPFields) -> Substring?? {
        if case .token(let token) = BearerToken.read(from: headers), token.hasPrefix(APIKeySecret.prefix) {
            return .some(token)
        }
        guard let keyHeader else { return nil }
        let values = headers[values: keyHeader]
        guard let first = values.first else { return nil }
        return values.count == 1 ? .some(Substring(first)) : .some(nil)
    }
}
