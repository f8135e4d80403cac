import ArgumentParser
import AuthGateway
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import TokenStore

/// `authgateway`: runs the forwardAuth decision server.
@main
struct AuthGatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authgateway",
        abstract: "Run the AuthGateway forwardAuth server.",
        discussion: "Exits with status 65 when the policy is invalid and 66 when the token store cannot be opened.")

    @Option(name: .long, help: "Policy YAML file, or a directory of them.")
    var policy: String = "policies/example.yaml"

    @Option(name: .long, help: "SQLite token store file (created if missing).")
    var db: String = "data/authgateway.sqlite"

    @Option(name: .long, help: "Address to listen on, HOST:PORT.")
    var listen: String = "127.0.0.1:8080"

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(name: .long, help: "Seconds between checks of the policy files for changes (0: never reload).")
    var reloadInterval: Double = 2

    @Option(
        name: .long,
        help: "Event loop threads serving connections (default: one per CPU core). On a small host shared with Traefik, 1 leaves Traefik more CPU.")
    var threads: Int?

    @Option(name: .long, help: "Close a connection that takes longer than this to send a request head (30s, 1m, …).")
    var headerTimeout: String = "30s"

    @Option(
        name: .long,
        help: "Close a connection idle this long between requests; keep it above the proxy's own (Traefik: 90s).")
    var idleTimeout: String = "120s"

    @Option(name: .long, help: "Serve GET /traefik/dynamic-config for Traefik's HTTP provider, with forwardAuth at this gateway URL.")
    var traefikGatewayURL: String?

    func validate() throws {
        guard ListenAddress(listen) != nil else {
            throw ValidationError("--listen must be HOST:PORT with a port from 0 to 65535, not '\(listen)'")
        }
        guard reloadInterval >= 0, reloadInterval.isFinite else { throw ValidationError("--reload-interval must be a number of seconds, 0 or more") }
        if let traefikGatewayURL, URL(string: traefikGatewayURL)?.host == nil || !traefikGatewayURL.hasPrefix("http") {
            throw ValidationError("--traefik-gateway-url must be an http(s) URL, not '\(traefikGatewayURL)'")
        }
        if let threads, !(1...1024).contains(threads) {
            throw ValidationError("--threads must be a number of threads from 1 to 1024, not \(threads)")
        }
        guard ConnectionTimeouts.duration(headerTimeout) != nil else {
            throw ValidationError("--header-timeout must be a positive duration such as 30s or 1m, not '\(headerTimeout)'")
        }
        guard ConnectionTimeouts.duration(idleTimeout) != nil else {
            throw ValidationError("--idle-timeout must be a positive duration such as 120s or 5m, not '\(idleTimeout)'")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        // Before anything uses SwiftNIO's shared event loop group, which the server and its HTTP clients run on.
        if let threads { Gateway.setEventLoopThreads(threads) }
        var logger = Logger(label: "authgateway")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let address = ListenAddress(listen)!

        let loaded: LoadedPolicy
        do {
            loaded = try PolicyLoader.load(path: policy)
        } catch {
            FileHandle.standardError.write(Data("authgateway: invalid policy, not starting:\n\(error.description)\n".utf8))
            throw ExitCode(65)
        }
        for warning in loaded.warnings { logger.warning("policy: \(warning)") }

        let store: TokenStore
        do {
            store = try TokenStore(path: db)
        } catch {
            FileHandle.standardError.write(Data("authgateway: \(error)\n".utf8))
            throw ExitCode(66)
        }

        let gateway = Gateway(policy: loaded.policy, store: store, logger: logger, traefikGatewayURL: traefikGatewayURL)
        let reloader: [any Service] = reloadInterval > 0
            ? [PolicyReloader(path: policy, gateway: gateway, interval: .milliseconds(Int(reloadInterval * 1000)), logger: logger)] : []
        logger.info(
            "starting",
            metadata: [
                "listen": "\(listen)", "policy": "\(loaded.files.joined(separator: ","))", "routes": "\(loaded.policy.routes.count)",
                "db": "\(db)",
            ])
        let timeouts = ConnectionTimeouts(header: ConnectionTimeouts.duration(headerTimeout)!, idle: ConnectionTimeouts.duration(idleTimeout)!)
        try await gateway.makeApplication(host: address.host, port: address.port, services: reloader, timeouts: timeouts).runService()
    }
}

/// A `HOST:PORT` listen address; IPv6 hosts are written in brackets.
struct ListenAddress {
    let host: String
    let port: Int

    init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }
}
