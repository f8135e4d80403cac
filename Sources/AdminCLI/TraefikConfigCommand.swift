import ArgumentParser
import AuthGateway
import Foundation

/// `authctl traefik-config`: Traefik's dynamic configuration generated from the policy.
struct TraefikConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "traefik-config",
        abstract: "Print Traefik dynamic configuration (routers, forwardAuth middleware, services) for a policy.",
        discussion: "--static prints the entrypoint settings the routers rely on instead.")

    @Option(help: "Policy YAML file or directory.")
    var policy: String = "policies/example.yaml"

    @Option(help: "Output format: yaml or json.")
    var format: String = "yaml"

    @Option(help: "URL at which Traefik reaches the gateway.")
    var gatewayURL: String = "http://127.0.0.1:8080"

    @Option(help: "Entrypoint name for the routers (repeatable).")
    var entrypoint: [String] = ["web"]

    @Flag(help: "Print the static-configuration snippet for the entrypoint.")
    var `static` = false

    func validate() throws {
        guard ["yaml", "json"].contains(format) else { throw ValidationError("--format must be yaml or json, not '\(format)'") }
        guard let url = URL(string: gatewayURL), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
            throw ValidationError("--gateway-url must be an http(s) URL, not '\(gatewayURL)'")
        }
    }

    func run() async throws {
        if `static` {
            print(TraefikConfiguration.staticSnippet(entryPoint: entrypoint.first ?? "web"), terminator: "")
            return
        }
        let loaded = try loadPolicyOrExit(policy)
        let generator = TraefikConfiguration(
            policy: loaded.policy, options: .init(gatewayURL: gatewayURL, entryPoints: entrypoint))
        do {
            print(format == "json" ? try generator.json() : try generator.yaml(), terminator: "")
        } catch let problem as TraefikConfiguration.Problem {
            CLIOutput.error(problem.description)
            throw ExitCode(65)
        }
    }
}
