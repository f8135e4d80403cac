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
            do {
                let loaded = try PolicyLoader.load(path: path)
                for warning in loaded.warnings { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }
                let policy = loaded.policy
                print("policy OK: \(policy.routes.count) routes, \(policy.issuers.count) issuers (\(loaded.files.joined(separator: ", ")))")
            } catch {
                FileHandle.standardError.write(Data("\(error.description)\n".utf8))
                throw ExitCode(65)
            }
        }
    }
}
