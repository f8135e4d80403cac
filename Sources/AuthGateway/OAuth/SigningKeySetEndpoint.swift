import Foundation
import Hummingbird
import TokenStore

/// `GET /oauth/jwks.json`: the public keys of the built-in authorization server (current and previous), so any
/// verifier, including this gateway's own `jwt` credential kind, can check the access tokens it signs.
enum SigningKeySetEndpoint {
    static func register(on router: Router<GatewayRequestContext>, path: String, store: TokenStore) {
        router.get(RouterPath(path)) { _, context in
            do {
                return MetadataEndpoint.json(String(decoding: try document(from: store), as: UTF8.self), status: .ok)
            } catch {
                context.logger.error("cannot publish signing keys", metadata: ["error": "\(error)"])
                return MetadataEndpoint.json(#"{"error":"temporarily_unavailable"}"#, status: .serviceUnavailable)
            }
        }
        router.on(RouterPath(path), method: .options) { _, _ in MetadataEndpoint.preflight() }
    }

    /// The JWK set of the published signing keys (current and previous).
    static func document(from store: TokenStore) throws -> Data {
        let keys = try store.publishedSigningKeys().map { try $0.publicJWK }
        return try JSONSerialization.data(withJSONObject: ["keys": keys], options: [.sortedKeys])
    }
}
