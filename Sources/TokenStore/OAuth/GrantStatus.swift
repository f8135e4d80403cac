import Foundation

/// Whether the tokens of a grant may be used, and within what limits, as the store sees it now.
///
/// A grant obtained by signing in with an API key inherits the key's end and route restriction; `until` is a time
/// and not a yes/no because a key expires without any change to the store, so a cached status must still be
/// compared with the clock on every use.
public enum GrantStatus: Sendable, Equatable {
    /// Revoked or unknown grant, revoked client, disabled user, or revoked or expired key.
    case inactive
    /// Usable before `until` (nil: no end besides the tokens' own), on `route` only when it is set.
    case active(until: Date?, route: String?)

    /// Whether the grant's tokens may be used at `date`.
    public func isActive(at date: Date) -> Bool {
        guard case .active(let until, _) = self else { return false }
        return until.map { date < $0 } ?? true
    }
}
