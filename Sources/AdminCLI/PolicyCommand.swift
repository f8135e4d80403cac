import ArgumentParser
import AuthGateway
import Foundation

/// `authctl policy …`: policy tools.
struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Check policy files and explain decisions.", subcommands: [Check.self, PolicyExplain.self])

    /// `authctl policy check FILE`: the same validation the server runs at start.
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a policy file or directory; prints file:line errors and exits 65 when invalid.")

        @Argument(help: "Policy YAML file or directory.")
        var path: String

        func run() async throws {
            let loaded = try loadPolicyOrExit(path)
            // Lint beyond validity: forwardAuth routes that bypass a proxied backend's session binding (finding I).
            for warning in loaded.warnings + SessionBindingLint.warnings(for: loaded.policy) {
                FileHandle.standardError.write(Data("warning: \(warning)\n".utf8))
            }
            let policy = loaded.policy
            print("policy OK: \(policy.routes.count) routes, \(policy.issuers.count) issuers (\(loaded.files.joined(separator: ", ")))")
        }
    }
}

/// Loads a policy, or prints its `file:line:` errors and exits 65: the same answer from every command.
func loadPolicyOrExit(_ path: String) throws -> LoadedPolicy {
    do {
        return try PolicyLoader.load(path: path)
    } catch {
        FileHandle.standardError.write(Data("\(error.description)\n".utf8))
        throw ExitCode(65)
    }
}
