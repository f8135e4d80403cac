import Foundation
import JWTKit

/// A JSON value, for reading claims whose names and shapes come from the policy's claim mapping.
public enum JSONValue: Sendable, Equatable, Codable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case array([JSONValue])
    case object([String: JSONValue])
    case null

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let v): try container.encode(v)
        case .number(let v): try container.encode(v)
        case .bool(let v): try container.encode(v)
        case .array(let v): try container.encode(v)
        case .object(let v): try container.encode(v)
        case .null: try container.encodeNil()
        }
    }

    var stringValue: String? { if case .string(let v) = self { v } else { nil } }
    var numberValue: Double? { if case .number(let v) = self { v } else { nil } }

    /// A list of strings from either a JSON array of strings or one space-separated string.
    var stringList: [String]? {
        switch self {
        case .string(let v): v.split(separator: " ").map(String.init)
        case .array(let values):
            values.allSatisfy { $0.stringValue != nil } ? values.compactMap(\.stringValue) : nil
        default: nil
        }
    }
}

/// Every claim of a JWT, kept as JSON so the verifier can apply the issuer's claim mapping.
///
/// `verify(using:)` checks nothing on purpose: the time, issuer and audience rules depend on the route and issuer
/// policy and are applied by `JWTAuthenticator` right after the signature check.
struct TokenClaims: JWTPayload {
    let claims: [String: JSONValue]

    init(from decoder: any Decoder) throws {
        self.claims = try decoder.singleValueContainer().decode([String: JSONValue].self)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(claims)
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {}

    subscript(name: String) -> JSONValue? { claims[name] }
}
