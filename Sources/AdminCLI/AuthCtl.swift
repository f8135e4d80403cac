import ArgumentParser
import Foundation
import TokenStore

/// `authctl`: the operator's command line for keys and policies.
@main
struct AuthCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authctl",
        abstract: "Administer AuthGateway: API keys and policies.",
        discussion: """
            Exit status: 0 success; 1 the operation was refused (unknown or already revoked key); \
            64 bad arguments; 65 invalid policy; 66 the token store cannot be opened.
            """,
        subcommands: [IssueKey.self, ListKeys.self, RevokeKey.self, RotateKey.self, PolicyCommand.self, TraefikConfigCommand.self, UserCommand.self, SigningKeyCommand.self, ClientsCommand.self, TokensCommand.self])

    @Option(name: .long, help: "SQLite token store file (default: $AUTHGATEWAY_DB or data/authgateway.sqlite).")
    var db: String = ProcessInfo.processInfo.environment["AUTHGATEWAY_DB"] ?? "data/authgateway.sqlite"

    /// Opens the store named by `--db`, turning failure into exit status 66 with a message.
    func openStore() throws -> TokenStore {
        do {
            return try TokenStore(path: db)
        } catch {
            CLIOutput.error("\(error)")
            throw ExitCode(66)
        }
    }
}

/// Shared output helpers: one place decides how results and errors are printed.
enum CLIOutput {
    static func error(_ message: String) {
        FileHandle.standardError.write(Data("authctl: \(message)\n".utf8))
    }

    static func json(_ object: Any) {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        print(String(decoding: data, as: UTF8.self))
    }

    static func timestamp(_ date: Date?) -> Any {
        guard let date else { return NSNull() }
        return date.formatted(.iso8601)
    }

    /// Runs a store operation, mapping refusals to exit status 1 with the store's message.
    static func refusing<T>(_ operation: () throws -> T) throws -> T {
        do {
            return try operation()
        } catch let error as TokenStoreError {
            Self.error(error.description)
            throw ExitCode(1)
        }
    }
}

/// Parses `90d`, `24h`, `30m`, `45s` (or a bare number of seconds) for `--expires` and `--overlap`.
enum DurationArgument {
    static func parse(_ text: String, option: String) throws -> TimeInterval {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [Character: TimeInterval] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800]
        if let seconds = Double(trimmed), seconds >= 0 { return seconds }
        if let unit = trimmed.last, let factor = units[unit], let amount = Double(trimmed.dropLast()), amount >= 0, amount.isFinite {
            return amount * factor
        }
        throw ValidationError("\(option) must be a duration such as 90d, 24h, 30m or 45s, not '\(text)'")
    }
}
