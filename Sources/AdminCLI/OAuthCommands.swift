import ArgumentParser
import Foundation
import TokenStore

/// `authctl clients …`: OAuth clients of the built-in authorization server.
struct ClientsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clients", abstract: "Add, list or revoke OAuth clients of the built-in authorization server.",
        subcommands: [Add.self, List.self, Revoke.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a machine client (client_credentials) or an introspecting resource server; its secret is printed once.",
            discussion: """
                Only clients made here get tokens without a user's login and consent, e.g.
                  authctl clients add ci --grant client_credentials --subject ci \\
                    --scopes ffmpeg --resource https://mcp.example.com/ffmpeg
                A client with one --resource gets tokens for it when the token request names
                none (mcp-proxy style). --introspect lets the client ask /oauth/introspect
                about tokens issued to other clients.
                """)
        @ParentCommand var root: AuthCtl
        @Argument(help: "A name for the client (shown by `clients list`).") var name: String
        @Option(help: "The grant the client may use: client_credentials.") var grant: String?
        @Option(help: "The subject of the client's tokens (sent as X-Auth-Subject).") var subject: String?
        @Option(help: "Comma-separated scopes the client's tokens may carry, e.g. ffmpeg,memory.") var scopes: String?
        @Option(help: "A resource URL (a route's `resource`) the client may get tokens for; repeat for several.") var resource: [String] = []
        @Flag(help: "Let the client introspect tokens issued to other clients at /oauth/introspect.") var introspect = false
        @Flag(help: "Print one JSON object with client_id and client_secret.") var json = false

        func validate() throws {
            try MachineClientFields.validate(name: name, grant: grant, subject: subject, scopes: scopes, resources: resource, introspect: introspect)
        }

        func run() async throws {
            let request = MachineClientRequest(
                name: name, grantTypes: grant.map { [$0] } ?? [], subject: subject, scopes: try scopes.map(KeyFields.scopes) ?? [],
                resources: resource, mayIntrospect: introspect)
            let (client, secret) = try CLIOutput.refusing { try root.openStore().addMachineClient(request) }
            if json {
                var object = MachineClientFields.jsonObject(client)
                object["client_secret"] = secret
                CLIOutput.json(object)
            } else {
                print("client_id: \(client.id)")
                print("client_secret: \(secret)")
                FileHandle.standardError.write(Data("added client \(client.id); this is the only time the secret is shown\n".utf8))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List registered and metadata-document clients (never their secrets).")
        @ParentCommand var root: AuthCtl
        @Flag(help: "Print a JSON array.") var json = false

        func run() async throws {
            let clients = try root.openStore().listClients()
            let rows = clients.map(MachineClientFields.jsonObject)
            if json { CLIOutput.json(rows) } else if rows.isEmpty { print("no clients") } else {
                for client in clients {
                    let machine = client.subject.map { "  subject=\($0) resources=\(client.resources.joined(separator: ","))" } ?? ""
                    let introspects = client.mayIntrospect ? "  introspect" : ""
                    print("\(client.id)  \(client.name)  \(client.source.rawValue)  \(client.revokedAt == nil ? "active" : "revoked")\(machine)\(introspects)")
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
