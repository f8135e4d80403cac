import Foundation
import Synchronization

/// Tokens whose signature was already verified, by SHA-256 of the token, with the issuer and key-set generation
/// that verified them.
///
/// Only the signature check is skipped on a hit: time, issuer, audience and scope rules run on every request,
/// because they depend on the route and the clock. An entry is used only while its issuer's key set is still the
/// one that verified it and the issuer is reachable within its stale limit; it never outlives the token's `exp`
/// (entries are dropped at `exp` or after `maximumAge`), and the cache is emptied when it reaches `capacity`.
/// Revocation is not keyed on the token text (ECDSA signatures are malleable): this cache only remembers that a
/// signature verified.
final class VerifiedTokenCache: Sendable {
    struct Entry: Sendable {
        let claims: TokenClaims
        let issuer: String
        let generation: Int
        let expiresAt: ContinuousClock.Instant
    }

    private let entries = Mutex<[Data: Entry]>([:])
    private let maximumAge: Duration
    private let maximumAgeSeconds: Double
    private let capacity: Int

    init(maximumAge: Duration = .seconds(300), capacity: Int = 10_000) {
        self.maximumAge = maximumAge
        self.maximumAgeSeconds = Double(maximumAge.components.seconds) + Double(maximumAge.components.attoseconds) / 1e18
        self.capacity = capacity
    }

    func lookup(_ digest: Data, now: ContinuousClock.Instant = .now) -> Entry? {
        entries.withLock { entries in
            guard let entry = entries[digest] else { return nil }
            guard now < entry.expiresAt else {
                entries[digest] = nil
                return nil
            }
            return entry
        }
    }

    func store(_ claims: TokenClaims, issuer: String, generation: Int, for digest: Data, now: ContinuousClock.Instant = .now) {
        guard let exp = claims["exp"]?.numberValue else { return }
        let remaining = exp - Date().timeIntervalSince1970
        guard remaining > 0 else { return }
        // Compared before converting: an issuer's `exp` can be any number, and Int64(1e21) traps.
        let lifetime = remaining >= maximumAgeSeconds ? maximumAge : .milliseconds(Int64(remaining * 1000))
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll() }
            entries[digest] = Entry(claims: claims, issuer: issuer, generation: generation, expiresAt: now + lifetime)
        }
    }
}
