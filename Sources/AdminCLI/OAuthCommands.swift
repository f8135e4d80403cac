import ArgumentParser
import Foundation
import TokenStore

/// `authctl clients …`: OAuth clients of the built-in authorization server.
struct ClientsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clients", abstract: "List or revoke OAuth clients of the built-in authorization server.",
        subcommands: [List.self, Revoke.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List registered and metadata-document clients (never their secrets).")
        @ParentCommand var root: AuthCtl
        @Flag(help: "Print a JSON array.") var json = false

        func run() async throws {
            let clients = try root.openStore().listClients()
            let rows = clients.map { client -> [String: Any] in
                var row: [String: Any] = [
                    "client_id": client.id, "name": client.name, "source": client.source.rawValue, "redirect_uris": client.redirectURIs,
                    "grant_types": client.grantTypes, "token_endpoint_auth_method": client.authMethod,
                    "created_at": CLIOutput.timestamp(client.createdAt), "status": client.revokedAt == nil ? "active" : "revoked",
                ]
                if let revoked = client.revokedAt { row["revoked_at"] = CLIOutput.timestamp(revoked) }
                return row
            }
            if json { CLIOutput.json(rows) } else if rows.isEmpty { print("no clients") } else {
                for client in clients {
                    print("\(client.id)  \(client.name)  \(client.source.rawValue)  \(client.revokedAt == nil ? "active" : "revoked")")
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a client: it can no longer authorize or get tokens, and the tokens it holds stop working.")
        @ParentCommand var root: AuthCtl
        @Argument(help: "The client_id (as `clients list` shows it).") var clientID: String

        func run() async throws {
            let store = try root.openStore()
            let client = try CLIOutput.refusing { try store.revokeClient(id: clientID) }
            print("revoked client \(client.id) (\(client.name))")
        }
    }
}

/// `authctl tokens …`: grants (refresh and access tokens) issued by the built-in authorization server.
struct TokensCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokens", abstract: "Revoke tokens issued by the built-in authorization server.", subcommands: [Revoke.self])

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke every grant of a subject: its refresh tokens fail and its access tokens are refused at once.")
        @ParentCommand var root: AuthCtl
        @Option(help: "The subject (user name, API-key subject or client id) whose tokens end.") var subject: String

        func validate() throws {
            if subject.isEmpty { throw ValidationError("--subject must not be empty") }
        }

        func run() async throws {
            let count = try CLIOutput.refusing { try root.openStore().revokeGrants(subject: subject) }
            print("revoked \(count) grant\(count == 1 ? "" : "s") of \(subject)")
        }
    }
}
