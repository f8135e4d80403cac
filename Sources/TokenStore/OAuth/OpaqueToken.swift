import Crypto
import Foundation

/// A random bearer string the authorization server hands out (client secret, code, refresh token, consent ticket)
/// and the SHA-256 digest the store keeps instead of it.
public struct OpaqueToken: Sendable {
    /// The value given to the client once; never stored.
    public let plaintext: String

    /// 32 random bytes behind a readable prefix (`agc_` codes, `agr_` refresh tokens, `agcs_` client secrets).
    public static func generate(prefix: String) -> OpaqueToken {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return OpaqueToken(plaintext: prefix + bytes.hexString)
    }

    public var digest: Data { Self.digest(of: plaintext) }

    /// High-entropy values need no slow hash: SHA-256 keeps a leaked database from revealing usable tokens.
    public static func digest(of plaintext: some StringProtocol) -> Data {
        Data(SHA256.hash(data: Data(plaintext.utf8)))
    }
}

/// Prefixes of the opaque values the authorization server issues, so each is recognisable in logs and scanners.
public enum OpaqueTokenPrefix {
    public static let clientSecret = "agcs_"
    public static let code = "agc_"
    public static let refreshToken = "agr_"
    public static let consentTicket = "agt_"
}
