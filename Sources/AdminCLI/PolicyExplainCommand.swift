import ArgumentParser
import AuthGateway
import Foundation
import HTTPTypes
import Logging
import TokenStore

/// `authctl policy explain`: which route a request matches, what it requires, and (with a credential) the decision
/// the gateway would make, with the internal reason a client never sees.
struct PolicyExplain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Show which route a request matches and, given a credential, what the gateway would decide and why.")

    @ParentCommand var root: AuthCtl

    @Option(help: "Policy YAML file or directory.")
    var policy: String = "policies/example.yaml"

    @Option(help: "The original request's method.")
    var method: String = "GET"

    @Option(help: "The original request's URL, e.g. https://mcp.example.com/ffmpeg/v1/tools.")
    var url: String

    @Option(help: "The original client's address (X-Forwarded-For).")
    var from: String = "203.0.113.1"

    @Option(help: "An Authorization header value to decide with, e.g. \"Bearer agk_…\" (never printed).")
    var authorization: String?

    @Option(help: "A value for the API key header (X-API-Key) to decide with (never printed).")
    var apiKey: String?

    func validate() throws {
        guard let components = URLComponents(string: url), components.host != nil, ["http", "https"].contains(components.scheme ?? "") else {
            throw ValidationError("--url must be an absolute http(s) URL, not '\(url)'")
        }
        guard IPAddress(from) != nil else { throw ValidationError("--from must be an IP address, not '\(from)'") }
    }

    func run() async throws {
        let loaded = try loadPolicyOrExit(policy)
        let components = URLComponents(string: url)!
        var uri = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        if let query = components.percentEncodedQuery { uri += "?" + query }
        var headers = HTTPFields()
        let forwarded: [(String, String)] = [
            ("X-Forwarded-Method", method.uppercased()), ("X-Forwarded-Proto", components.scheme ?? "https"),
            ("X-Forwarded-Host", components.host.map { h in components.port.map { "\(h):\($0)" } ?? h } ?? ""),
            ("X-Forwarded-Uri", uri), ("X-Forwarded-For", from),
        ]
        for (name, value) in forwarded { headers.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        if let authorization { headers[.authorization] = authorization }
        if let apiKey, let name = loaded.policy.gateway.apiKeyHeader.flatMap({ HTTPField.Name($0) }) { headers[name] = apiKey }

        let proxy = loaded.policy.gateway.trustedProxies.first?.base
        let request: ForwardedRequest
        do {
            request = try ForwardedRequest(headers: headers, peer: proxy, trustedProxies: loaded.policy.gateway.trustedProxies)
        } catch {
            print("request refused before routing: \(error)")
            return
        }
        switch RouteMatcher(routes: loaded.policy.routes).match(request) {
        case .noRoute:
            print("no route matches \(request.method) \(request.host)\(request.path): denied (403)")
            return
        case .unsafeCapture(let route, let capture):
            print("route \(route.name) (\(route.location)) matches, but {\(capture)} is not a safe identity value: denied (400)")
            return
        case .ambiguousSegment(let segment):
            print("path segment '\(segment)' may be read as another route's literal: denied (400)")
            return
        case .matched(let matched):
            describe(matched)
        }
        guard authorization != nil || apiKey != nil else { return }
        var logger = Logger(label: "authctl")
        logger.logLevel = .critical
        let gateway = Gateway(policy: loaded.policy, store: try root.openStore(), logger: logger)
        switch await gateway.engine.decide(headers: headers, peer: proxy) {
        case .allow(let allow):
            print("decision: allow (200)")
            var secretHeader: String?
            if case .credential(let credential) = allow.route.backend.style { secretHeader = credential.header.lowercased() }
            for field in allow.headers {
                let name = field.name.rawName
                print("  \(name): \(name.lowercased() == secretHeader ? "(the backend's secret, not shown)" : field.value)")
            }
        case .deny(let denial):
            let rendered = DenialResponse(denial, gateway: loaded.policy.gateway)
            print("decision: deny (\(rendered.status)): \(denial.reason)")
        }
    }

    private func describe(_ matched: MatchedRoute) {
        let route = matched.route
        let requirements = route.requirements
        print("route: \(route.name) (\(route.location))")
        print("  resource: \(route.resource)")
        print("  accepts: \(route.accept.map(\.rawValue).joined(separator: ", "))\(route.accept.contains(.jwt) ? " (issuers: \(route.issuers.joined(separator: ", ")))" : "")")
        if !matched.captures.isEmpty {
            print("  captures: \(matched.captures.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))")
        }
        if !requirements.scopes.isEmpty { print("  requires scopes: \(requirements.scopes.joined(separator: " "))") }
        if !requirements.subjects.isEmpty { print("  requires subject in: \(requirements.subjects.joined(separator: ", "))") }
        if !requirements.groups.isEmpty { print("  requires group in: \(requirements.groups.joined(separator: ", "))") }
        if !requirements.networks.isEmpty { print("  requires source in: \(requirements.networks.map(\.description).joined(separator: ", "))") }
        for binding in requirements.bindings { print("  binds {\(binding.capture)} to the principal's \(binding.field.rawValue)") }
        switch route.backend.style {
        case .headers: print("  backend: identity headers")
        case .credential(let credential): print("  backend: own credential in \(credential.header) from \(credential.origin)\(credential.value == nil ? " (NOT SET: 503)" : "")")
        case .path(let backend): print("  backend: proxied by the gateway to \(backend.upstream)\(backend.template)")
        }
    }
}
