import ArgumentParser
import Foundation
import TokenStore

/// `authctl signing-key …`: the built-in authorization server's token signing keys.
struct SigningKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signing-key", abstract: "Rotate or list the keys access tokens are signed with.",
        subcommands: [Rotate.self, List.self])

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new current signing key; the previous one stays published so its tokens keep verifying.")
        @ParentCommand var root: AuthCtl

        func run() async throws {
            let key = try root.openStore().rotateSigningKey()
            print("current signing key is now \(key.kid)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List signing keys (never the private keys).")
        @ParentCommand var root: AuthCtl
        @Flag(help: "Print a JSON array.") var json = false

        func run() async throws {
            let keys = try root.openStore().listSigningKeys()
            let rows = keys.enumerated().map { index, key -> [String: Any] in
                let status = key.retiredAt == nil ? "current" : (index == 1 ? "previous (published)" : "retired")
                return ["kid": key.kid, "algorithm": key.algorithm, "status": status, "created_at": CLIOutput.timestamp(key.createdAt)]
            }
            if json { CLIOutput.json(rows) } else {
                for row in rows { print("\(row["kid"]!)  \(row["algorithm"]!)  \(row["status"]!)") }
            }
        }
    }
}
