import Crypto
import Foundation
import TokenStore

/// The CSRF token of the sign-in forms: a random nonce and the time it was made, under an HMAC keyed with a secret
/// only the gateway holds (`nonce.time.mac`, hex and decimal, safe in a cookie).
///
/// The double-submit check (cookie equals form field) alone accepts any value an attacker manages to plant in both,
/// e.g. through a sibling subdomain or an upstream's `Set-Cookie`; with the MAC only a recent token the gateway
/// made itself passes.
enum CSRFToken {
    /// The name of the store secret the MAC is keyed with.
    static let secretName = "csrf"
    /// How long a sign-in page's token stays usable.
    static let maximumAge: TimeInterval = 3600
    /// Longer values are not tokens this type made; refused before any work.
    static let maximumLength = 128

    static func make(key: SymmetricKey, now: Date = Date()) -> String {
        let body = OpaqueToken.generate(prefix: "").plaintext.prefix(32) + "." + String(Int(now.timeIntervalSince1970))
        return body + "." + mac(of: body, key: key)
    }

    /// Whether `token` is one this gateway made with `key` less than `maximumAge` ago.
    static func isValid(_ token: String, key: SymmetricKey, now: Date = Date()) -> Bool {
        guard token.utf8.count <= maximumLength else { return false }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].utf8.count == 32, let made = Int(parts[1]) else { return false }
        let age = now.timeIntervalSince1970 - TimeInterval(made)
        guard age >= -60, age <= maximumAge else { return false }
        let expected = mac(of: parts[0] + "." + parts[1], key: key)
        return constantTimeEquals(Data(expected.utf8), Data(parts[2].utf8))
    }

    private static func mac(of body: some StringProtocol, key: SymmetricKey) -> String {
        HMAC<SHA256>.authenticationCode(for: Data(("authgateway-csrf-v1|" + body).utf8), using: key).map { String(format: "%02x", $0) }.joined()
    }
}
