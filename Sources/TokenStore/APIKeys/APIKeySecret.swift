import Crypto
import Foundation

/// The plaintext of a newly issued API key, and the derived values the store keeps instead of it.
public struct APIKeySecret: Sendable {
    /// The readable prefix every AuthGateway key starts with, so a leaked key is recognisable (secret scanners) and
    /// the gateway can tell an API key from a JWT without a lookup.
    public static let prefix = "agk_"
    /// 32 random bytes: 256 bits of entropy.
    @usableFromInline static let randomByteCount = 32

    /// The full key as the client sends it. Shown once, never stored.
    public let plaintext: String

    /// Generates a key from the system's cryptographically secure generator.
    public static func generate() -> APIKeySecret {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<randomByteCount).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return APIKeySecret(plaintext: prefix + bytes.hexString)
    }

    public var digest: Data { Self.digest(of: plaintext) }

    /// The characters of the key shown in listings: the prefix and the first eight random characters.
    public var displayPrefix: String { String(plaintext.prefix(Self.prefix.count + 8)) }

    /// SHA-256 of the key's UTF-8 bytes: what the store indexes. Keys are high-entropy, so a slow hash adds nothing.
    /// Inlinable, like `hasKeyShape`, so callers in other modules get it specialized for their string type.
    @inlinable
    public static func digest(of plaintext: some StringProtocol) -> Data {
        Data(SHA256.hash(data: Data(plaintext.utf8)))
    }

    /// Whether `candidate` has the shape of an AuthGateway key (prefix and hex body of the right length).
    ///
    /// Checked on every API-key request: inlinable so that the gateway's call is specialized for `Substring` (the
    /// unspecialized generic walked the bytes through protocol witnesses, 7% of an API-key decision in perf), and on
    /// bytes because `hasPrefix` on a generic StringProtocol goes through Foundation's bridged search.
    @inlinable
    public static func hasKeyShape(_ candidate: some StringProtocol) -> Bool {
        guard candidate.utf8.starts(with: prefix.utf8) else { return false }
        let body = candidate.utf8.dropFirst(prefix.utf8.count)
        return body.count == randomByteCount * 2 && body.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }
}

/// Generates opaque record identifiers such as `key_3f9a…`.
public enum RecordID {
    public static func make(prefix: String) -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<8).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return prefix + bytes.hexString
    }
}

/// Compares two byte strings in time that depends only on their length, never on where they differ.
public func constantTimeEquals(_ lhs: Data, _ rhs: Data) -> Bool {
    constantTimeEquals(bytes: lhs, rhs)
}

/// The comparison behind `constantTimeEquals(_:_:)`, for any byte collections: it reads every byte of both (no early
/// exit at the first difference), so the work depends only on the length. Generic so that a test can count the
/// bytes it reads, which is the property that matters, instead of timing it.
@inlinable
public func constantTimeEquals<L: Collection<UInt8>, R: Collection<UInt8>>(bytes lhs: L, _ rhs: R) -> Bool {
    guard lhs.count == rhs.count else { return false }
    var difference: UInt8 = 0
    for (a, b) in zip(lhs, rhs) { difference |= a ^ b }
    return difference == 0
}

extension Sequence<UInt8> {
    var hexString: String { map { String(format: "%02x", $0) }.joined() }
}
