import Foundation
import Yams

/// Reads typed values out of one policy file's YAML tree, recording every problem with its line.
final class PolicyReader {
    let file: String
    let environment: [String: String]
    private(set) var errors: [PolicyError] = []

    init(file: String, environment: [String: String]) {
        self.file = file
        self.environment = environment
    }

    func fail(_ node: Node?, _ message: String) {
        errors.append(PolicyError(file: file, line: node?.mark?.line ?? 1, message: message))
    }

    /// The entries of a mapping, refusing keys outside `allowed` (a typo must not silently drop a requirement).
    func mapping(_ node: Node, _ what: String, allowed: Set<String>) -> [String: Node]? {
        guard let mapping = node.mapping else {
            fail(node, "\(what) must be a mapping")
            return nil
        }
        var entries: [String: Node] = [:]
        for (key, value) in mapping {
            guard let name = key.scalar?.string else {
                fail(key, "\(what) has a key that is not a plain name")
                continue
            }
            guard allowed.contains(name) else {
                fail(key, "unknown key '\(name)' in \(what) (expected one of: \(allowed.sorted().joined(separator: ", ")))")
                continue
            }
            entries[name] = value
        }
        return entries
    }

    /// The keys of a mapping in file order, for sections whose keys are names chosen by the operator.
    func namedEntries(_ node: Node, _ what: String) -> [(name: String, key: Node, value: Node)]? {
        guard let mapping = node.mapping else {
            fail(node, "\(what) must be a mapping of names")
            return nil
        }
        return mapping.compactMap { key, value in
            guard let name = key.scalar?.string else {
                fail(key, "\(what) has a key that is not a plain name")
                return nil
            }
            return (name, key, value)
        }
    }

    func string(_ node: Node, _ what: String) -> String? {
        guard let scalar = node.scalar else {
            fail(node, "\(what) must be a single value")
            return nil
        }
        do {
            return try EnvironmentSubstitution.expand(scalar.string, environment: environment)
        } catch .unset(let name) {
            fail(node, "\(what): environment variable \(name) is not set (use ${\(name):-default} to give a default)")
        } catch {
            if case .malformed(let message) = error { fail(node, "\(what): \(message)") }
        }
        return nil
    }

    func nonEmptyString(_ node: Node, _ what: String) -> String? {
        guard let value = string(node, what) else { return nil }
        guard !value.trimmingCharacters(in: .whitespaces).isEmpty else {
            fail(node, "\(what) must not be empty")
            return nil
        }
        return value
    }

    func strings(_ node: Node, _ what: String) -> [String]? {
        guard let sequence = node.sequence else {
            fail(node, "\(what) must be a list, e.g. [a, b]")
            return nil
        }
        let values = sequence.compactMap { nonEmptyString($0, "an entry of \(what)") }
        return values.count == sequence.count ? values : nil
    }

    func bool(_ node: Node, _ what: String) -> Bool? {
        switch string(node, what)?.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        case nil: return nil
        default:
            fail(node, "\(what) must be true or false")
            return nil
        }
    }

    /// A duration written as `30s`, `5m`, `24h`, `90d` or a number of seconds.
    func duration(_ node: Node, _ what: String) -> TimeInterval? {
        guard let text = string(node, what) else { return nil }
        guard let seconds = Self.parseDuration(text) else {
            fail(node, "\(what) must be a duration such as 30s, 5m, 24h or 90d, not '\(text)'")
            return nil
        }
        return seconds
    }

    func networks(_ node: Node, _ what: String) -> [IPNetwork]? {
        guard let sequence = node.sequence else {
            fail(node, "\(what) must be a list of CIDR blocks, e.g. [127.0.0.1/32]")
            return nil
        }
        var result: [IPNetwork] = []
        for entry in sequence {
            guard let text = string(entry, "an entry of \(what)") else { continue }
            guard let network = IPNetwork(text) else {
                fail(entry, "\(what): '\(text)' is not an IP address or CIDR block")
                continue
            }
            result.append(network)
        }
        return result.count == sequence.count ? result : nil
    }

    /// An absolute http(s) URL without query or fragment, returned without a trailing slash.
    func url(_ node: Node, _ what: String) -> String? {
        guard let text = nonEmptyString(node, what) else { return nil }
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            scheme == "https" || scheme == "http", let host = components.host, !host.isEmpty,
            components.query == nil, components.fragment == nil, components.user == nil
        else {
            fail(node, "\(what) must be an absolute http(s) URL without query or fragment, not '\(text)'")
            return nil
        }
        return text.hasSuffix("/") && components.path.count > 1 ? String(text.dropLast()) : (components.path == "/" ? String(text.dropLast()) : text)
    }

    static func parseDuration(_ text: String) -> TimeInterval? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let seconds = Double(trimmed), seconds >= 0 { return seconds }
        guard let unit = trimmed.last, let amount = Double(trimmed.dropLast()), amount >= 0 else { return nil }
        switch unit {
        case "s": return amount
        case "m": return amount * 60
        case "h": return amount * 3600
        case "d": return amount * 86400
        default: return nil
        }
    }

    /// Whether `name` is a valid HTTP header name without `_` or `.`, which some backends fold into `-`.
    static func isSafeHeaderName(_ name: String) -> Bool {
        !name.isEmpty && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
    }
}
