import ArgumentParser
import Foundation
import TokenStore

/// `authctl user …`: people who log in to the built-in authorization server.
struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user", abstract: "Manage users of the built-in authorization server.",
        subcommands: [Add.self, SetAccess.self, Passwd.self, Disable.self, Enable.self, List.self])

    /// A comma-separated `--scopes` or `--groups` value as a list; nil when the option was not given. Exit 64 names
    /// the option and the bad name.
    static func accessNames(_ text: String?, option: String) throws -> [String]? {
        guard let text else { return nil }
        let names = text.isEmpty ? [] : text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        if let problem = Credentials.accessNamesProblem(names, what: option) { throw ValidationError(problem) }
        return names
    }

    /// Reads the password: one line from standard input with `--password-stdin`, else a prompt on a terminal.
    static func readPassword(fromStdin: Bool) throws -> String {
        if fromStdin {
            guard let line = readLine(strippingNewline: true) else { throw ValidationError("--password-stdin: no password on standard input") }
            return line
        }
        guard isatty(STDIN_FILENO) == 1, let first = getpass("Password: ").map({ String(cString: $0) }),
            let second = getpass("Repeat password: ").map({ String(cString: $0) })
        else { throw ValidationError("no terminal to ask for the password: pass it with --password-stdin") }
        guard first == second else { throw ValidationError("the two passwords differ") }
        return first
    }

    /// Reads and checks a password, exiting 64 with the rule it breaks.
    static func newPassword(fromStdin: Bool) throws -> String {
        let password = try readPassword(fromStdin: fromStdin)
        if let problem = Credentials.passwordProblem(password) {
            CLIOutput.error(problem)
            throw ExitCode(64)
        }
        return password
    }

    /// Disables or re-enables a user, printing what changed (exit 1 for an unknown user).
    static func setDisabled(_ disabled: Bool, username: String, root: AuthCtl) throws {
        let store = try root.openStore()
        try CLIOutput.refusing { try store.setDisabled(username: username, disabled) }
        print("\(disabled ? "disabled" : "enabled") \(username)")
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a user (password hashed with bcrypt).")
        @ParentCommand var root: AuthCtl
        @Argument(help: "User name (letters, digits, '.', '_', '@', '-').") var username: String
        @Flag(help: "Read the password from standard input instead of prompting.") var passwordStdin = false
        @Option(help: "Comma-separated scopes a sign-in may be granted, e.g. memory,ffmpeg (default: none).") var scopes: String?
        @Option(help: "Comma-separated groups the user's access tokens carry, for require.groups.") var groups: String?

        func validate() throws {
            if let problem = Credentials.usernameProblem(username) { throw ValidationError(problem) }
            _ = try UserCommand.accessNames(scopes, option: "--scopes")
            _ = try UserCommand.accessNames(groups, option: "--groups")
        }

        func run() async throws {
            let store = try root.openStore()
            let password = try UserCommand.newPassword(fromStdin: passwordStdin)
            let scopes = try UserCommand.accessNames(scopes, option: "--scopes") ?? []
            let groups = try UserCommand.accessNames(groups, option: "--groups") ?? []
            let user = try CLIOutput.refusing { try store.addUser(username: username, password: password, scopes: scopes, groups: groups) }
            print("added user \(user.username) (\(user.id))")
            if scopes.isEmpty { print("note: \(user.username) has no scopes; sign-ins are granted none until `authctl user set \(user.username) --scopes …`") }
        }
    }

    struct SetAccess: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Replace a user's scopes and/or groups; taking any away also ends the user's OAuth tokens at once.")
        @ParentCommand var root: AuthCtl
        @Argument(help: "User name.") var username: String
        @Option(help: "Comma-separated scopes a sign-in may be granted (\"\" for none).") var scopes: String?
        @Option(help: "Comma-separated groups the user's access tokens carry (\"\" for none).") var groups: String?

        func validate() throws {
            guard scopes != nil || groups != nil else { throw ValidationError("give --scopes, --groups or both") }
            _ = try UserCommand.accessNames(scopes, option: "--scopes")
            _ = try UserCommand.accessNames(groups, option: "--groups")
        }

        func run() async throws {
            let store = try root.openStore()
            let scopes = try UserCommand.accessNames(scopes, option: "--scopes")
            let groups = try UserCommand.accessNames(groups, option: "--groups")
            let user = try CLIOutput.refusing { try store.setAccess(username: username, scopes: scopes, groups: groups) }
            print("\(user.username): scopes [\(user.scopeList.joined(separator: ", "))], groups [\(user.groupList.joined(separator: ", "))]")
        }
    }

    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a user's password.")
        @ParentCommand var root: AuthCtl
        @Argument(help: "User name.") var username: String
        @Flag(help: "Read the password from standard input instead of prompting.") var passwordStdin = false

        func run() async throws {
            let store = try root.openStore()
            let password = try UserCommand.newPassword(fromStdin: passwordStdin)
            try CLIOutput.refusing { try store.setPassword(username: username, password: password) }
            print("password changed for \(username)")
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop a user from logging in and revoke their OAuth tokens at once.")
        @ParentCommand var root: AuthCtl
        @Argument(help: "User name.") var username: String

        func run() async throws {
            try UserCommand.setDisabled(true, username: username, root: root)
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Allow a disabled user to log in again.")
        @ParentCommand var root: AuthCtl
        @Argument(help: "User name.") var username: String

        func run() async throws {
            try UserCommand.setDisabled(false, username: username, root: root)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users (never their password hashes).")
        @ParentCommand var root: AuthCtl
        @Flag(help: "Print a JSON array.") var json = false

        func run() async throws {
            let users = try root.openStore().listUsers()
            if json {
                CLIOutput.json(users.map {
                    [
                        "id": $0.id, "username": $0.username, "disabled": $0.disabled, "scopes": $0.scopeList, "groups": $0.groupList,
                        "created_at": CLIOutput.timestamp($0.createdAt),
                    ] as [String: Any]
                })
            } else {
                for user in users {
                    let access = "  scopes: \(user.scopes.isEmpty ? "-" : user.scopeList.joined(separator: ","))  groups: \(user.groups.isEmpty ? "-" : user.groupList.joined(separator: ","))"
                    print("\(user.id)  \(user.username)\(access)\(user.disabled ? "  (disabled)" : "")")
                }
            }
        }
    }
}
