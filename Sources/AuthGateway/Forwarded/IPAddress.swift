#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 or IPv6 address as raw bytes; IPv4-mapped IPv6 addresses are folded to IPv4 so one CIDR list serves both.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6.
    public let bytes: [UInt8]
    public let description: String

    /// Parses a textual address (`127.0.0.1`, `::1`, `::ffff:10.0.0.1`); nil when it is not exactly an address.
    public init?(_ text: some StringProtocol) {
        let text = String(text)
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.bytes = withUnsafeBytes(of: &v4) { Array($0) }
            self.description = text
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let raw = withUnsafeBytes(of: &v6) { Array($0) }
        if raw[0..<10].allSatisfy({ $0 == 0 }) && raw[10] == 0xff && raw[11] == 0xff {
            self.bytes = Array(raw[12..<16])
            self.description = self.bytes.map(String.init).joined(separator: ".")
        } else {
            self.bytes = raw
            self.description = text
        }
    }
}

/// A CIDR block such as `127.0.0.1/32` or `fd00::/8`.
public struct IPNetwork: Sendable, Hashable, CustomStringConvertible {
    public let base: IPAddress
    public let prefixLength: Int

    public var description: String { "\(base)/\(prefixLength)" }

    /// Parses `ADDRESS/PREFIX` or a bare address (a single host); nil when malformed.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(parts[0]) else { return nil }
        let maximum = address.bytes.count * 8
        if parts.count == 2 {
            guard let length = Int(parts[1]), (0...maximum).contains(length), parts[1].allSatisfy(\.isNumber) else { return nil }
            self.prefixLength = length
        } else {
            self.prefixLength = maximum
        }
        self.base = address
    }

    public func contains(_ address: IPAddress) -> Bool {
        guard address.bytes.count == base.bytes.count else { return false }
        var remaining = prefixLength
        for index in 0..<base.bytes.count where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - bits))
            if base.bytes[index] & mask != address.bytes[index] & mask { return false }
            remaining -= bits
        }
        return true
    }
}

extension Array where Element == IPNetwork {
    /// Whether any network in the list contains `address`; false for a nil address (fail closed).
    public func containsAddress(_ address: IPAddress?) -> Bool {
        guard let address else { return false }
        return contains { $0.contains(address) }
    }
}
