import Crypto
import Foundation
import TokenStore

/// Proof Key for Code Exchange (RFC 7636), S256 only: `plain` gives no protection once the request leaks.
enum PKCE {
    private static let verifierCharacters = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8)
    private static let challengeCharacters = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Whether a challenge has the shape of a base64url SHA-256 digest.
    static func isWellFormedChallenge(_ challenge: String) -> Bool {
        challenge.utf8.count == 43 && challenge.utf8.allSatisfy(challengeCharacters.contains)
    }

    /// Whether `verifier` (43–128 unreserved characters) hashes to `challenge`, compared in constant time.
    static func verify(verifier: String, challenge expected: String) -> Bool {
        guard (43...128).contains(verifier.utf8.count), verifier.utf8.allSatisfy(verifierCharacters.contains) else { return false }
        return constantTimeEquals(Data(challenge(for: verifier).utf8), Data(expected.utf8))
    }

    static func challenge(for verifier: String) -> String {
        Base64URL.encode(Data(SHA256.hash(data: Data(verifier.utf8))))
    }
}
