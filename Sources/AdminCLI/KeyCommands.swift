import ArgumentParser
import AuthGateway
import Foundation
import TokenStore

/// `authctl issue-key`: creates a key and prints it once.
struct IssueKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issue-key", abstract: "Issue an API key. The key is printed once and never stored.")

    @ParentCommand var root: AuthCtl

    @Option(help: "The subject the key authenticates (sent as X-Auth-Subject).")
    var subject: String

    @Option(help: "Comma-separated scopes, e.g. memory,ffmpeg.")
    var scopes: String = ""

    @Option(help: "Restrict the key to one route name of the policy.")
    var route: String?

    @Option(help: "Lifetime, e.g. 90d, 24h. Default: no expiry.")
    var expires: String?

    @Option(help: "A label for the key; also the client name (X-Auth-Client).")
    var name: String = "default"

    @Flag(help: "Print one JSON object with id and key.")
    var json = false

    func validate() throws {
        try KeyFields.validate(subject: subject, name: name)
        _ = try KeyFields.scopes(scopes)
        if let expires, try DurationArgument.parse(expires, option: "--expires") <= 0 {
            throw ValidationError("--expires must be longer than zero")
        }
        if let route, route.isEmpty || route.contains(where: \.isWhitespace) {
            throw ValidationError("--route must be a route name from the policy")
        }
    }

    func run() async throws {
        let store = try root.openStore()
        let now = Date()
        let expiresAt = try expires.map { now.addingTimeInterval(try DurationArgument.parse($0, option: "--expires")) }
        let request = APIKeyRequest(subject: subject, name: name, scopes: try KeyFields.scopes(scopes), route: route, expiresAt: expiresAt)
        let (key, secret) = try store.issueKey(request, now: now)
        if json {
            var object = KeyFields.jsonObject(key)
            object["key"] = secret.plaintext
            CLIOutput.json(object)
        } else {
            print(secret.plaintext)
            FileHandle.standardError.write(Data("issued \(key.id) for \(key.subject); this is the only time the key is shown\n".utf8))
        }
    }
}

/// `authctl list-keys`: every key without its secret.
struct ListKeys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list-keys", abstract: "List API keys (never their secrets).")

    @ParentCommand var root: AuthCtl

    @Flag(help: "Print a JSON array.")
    var json = false

    func run() async throws {
        let keys = try root.openStore().listKeys()
        if json {
            CLIOutput.json(keys.map(KeyFields.jsonObject))
            return
        }
        let rows = keys.map { key in
            [key.id, key.displayPrefix + "…", key.subject, key.name, key.scopes, key.route ?? "*", KeyFields.status(key),
             key.expiresAt.map { $0.formatted(.iso8601) } ?? "never", key.lastUsedAt.map { $0.formatted(.iso8601) } ?? "never"]
        }
        let header = ["ID", "PREFIX", "SUBJECT", "NAME", "SCOPES", "ROUTE", "STATUS", "EXPIRES", "LAST USED"]
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [header] + rows {
            print(row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
    }
}

/// `authctl revoke-key ID`: refuses the key from now on.
struct RevokeKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "revoke-key", abstract: "Revoke an API key at once.")

    @ParentCommand var root: AuthCtl

    @Argument(help: "The key id (key_…), as shown by list-keys.")
    var id: String

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() async throws {
        let store = try root.openStore()
        let key = try CLIOutput.refusing { try store.revokeKey(id: id) }
        if json { CLIOutput.json(KeyFields.jsonObject(key)) } else { print("revoked \(key.id)") }
    }
}

/// `authctl rotate-key ID`: issues a replacement and lets the old key overlap for a while.
struct RotateKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-key",
        abstract: "Replace an API key by a new one with the same subject, scopes and route.",
        discussion: "The old key keeps working for --overlap (default 24h; 0 revokes it at once).")

    @ParentCommand var root: AuthCtl

    @Argument(help: "The key id (key_…) to replace.")
    var id: String

    @Option(help: "How long the old key keeps working, e.g. 24h or 0.")
    var overlap: String = "24h"

    @Flag(help: "Print one JSON object with the new id and key.")
    var json = false

    func validate() throws {
        _ = try DurationArgument.parse(overlap, option: "--overlap")
    }

    func run() async throws {
        let store = try root.openStore()
        let overlapSeconds = try DurationArgument.parse(overlap, option: "--overlap")
        let (new, secret, old) = try CLIOutput.refusing { try store.rotateKey(id: id, overlap: overlapSeconds) }
        if json {
            var object = KeyFields.jsonObject(new)
            object["key"] = secret.plaintext
            object["replaces"] = old.id
            object["old_key_expires_at"] = CLIOutput.timestamp(old.revokedAt ?? old.expiresAt)
            CLIOutput.json(object)
        } else {
            print(secret.plaintext)
            let until = (old.revokedAt ?? old.expiresAt).map { $0.formatted(.iso8601) } ?? "now"
            FileHandle.standardError.write(Data("issued \(new.id) replacing \(old.id), which works until \(until)\n".utf8))
        }
    }
}

/// Validation and JSON rendering shared by the key commands.
enum KeyFields {
    static func validate(subject: String, name: String) throws {
        // Leading or trailing whitespace is refused too: HTTP trims it from the emitted header (finding F).
        guard !subject.isEmpty, !subject.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }), !IdentityValue.hasSurroundingWhitespace(subject) else {
            throw ValidationError("--subject must be a non-empty value without control characters or leading/trailing whitespace")
        }
        guard !name.isEmpty, !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }), !IdentityValue.hasSurroundingWhitespace(name) else {
            throw ValidationError("--name must be a non-empty value without control characters or leading/trailing whitespace")
        }
    }

    static func scopes(_ text: String) throws -> [String] {
        let scopes = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        if text.isEmpty { return [] }
        for scope in scopes where scope.isEmpty || scope.contains(where: { $0.isWhitespace || $0 == "\"" || $0 == "\\" }) {
            throw ValidationError("--scopes must be comma-separated names without spaces or quotes, not '\(text)'")
        }
        return scopes
    }

    static func status(_ key: APIKey) -> String {
        key.unusableReason(at: Date())?.rawValue ?? "active"
    }

    static func jsonObject(_ key: APIKey) -> [String: Any] {
        [
            "id": key.id, "prefix": key.displayPrefix, "name": key.name, "subject": key.subject, "scopes": key.scopeList,
            "route": key.route as Any? ?? NSNull(), "status": status(key), "created_at": CLIOutput.timestamp(key.createdAt),
            "expires_at": CLIOutput.timestamp(key.expiresAt), "revoked_at": CLIOutput.timestamp(key.revokedAt),
            "last_used_at": CLIOutput.timestamp(key.lastUsedAt), "rotated_from": key.rotatedFrom as Any? ?? NSNull(),
        ]
    }
}
