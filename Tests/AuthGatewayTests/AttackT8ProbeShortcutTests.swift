import AuthGateway
import Foundation
import Testing

/// Attack table T8 (SECURITY.md): oauth2-proxy answered a forwarded request as healthy, without authentication,
/// when it carried a probe `User-Agent` (`kube-probe/…`) or named a health path (GHSA-5hvv-m4w4-gf6v). Here a
/// forwarded request for a protected route is decided like any other, whatever its user agent and whatever its
/// path under the route: 401 without a credential, on the fast decision path and through Hummingbird's router.
/// The gateway's own `/healthz` is an endpoint of its own, never a forwarded path.
@Suite("T8: health and probe shortcuts")
struct AttackT8ProbeShortcutTests {
    /// One forwarded request under a protected route: the host and path the client asked for.
    struct Probe: Sendable, CustomTestStringConvertible {
        let host: String
        let path: String
        let route: String
        var testDescription: String { "\(host)\(path)" }
    }

    static let probes: [Probe] =
        ["/health", "/healthz", "/ready", "/readyz", "/livez", "/metrics", "/ping", "/status", "/-/healthy", "/actuator/health"]
        .map { Probe(host: "site.example.com", path: $0, route: "site") }
        + ["/ffmpeg/health", "/ffmpeg/healthz", "/ffmpeg/ready", "/ffmpeg/metrics", "/ffmpeg/healthz?probe=1"]
        .map { Probe(host: "mcp.example.com", path: $0, route: "ffmpeg") }

    /// User agents of Kubernetes, cloud load balancers, Prometheus and Consul probes; nil sends none.
    static let agents: [String?] = ["kube-probe/1.29", "ELB-HealthChecker/2.0", "GoogleHC/1.0", "Prometheus/2.53.0", "Consul Health Check", nil]

    static let routes = """
          - name: ffmpeg
            match: { host: mcp.example.com, path: "/ffmpeg/**" }
            accept: [api_key]
            require: { scopes: [ffmpeg] }
          - name: site
            match: { host: site.example.com, path: "/**" }
            accept: [api_key]
            require: { scopes: [site] }
        """

    let fixture: GatewayFixture
    let key: String

    init() throws {
        fixture = try GatewayFixture(policy: testPolicy(routes: Self.routes))
        key = try fixture.issueKey(subject: "alice", scopes: ["ffmpeg", "site"]).key
    }

    /// A decision request as Traefik sends it: the client's own headers (its user agent, its credential) plus the
    /// forwarded ones describing the original request.
    func decisionRequest(_ probe: Probe, method: String, agent: String?, credential: Bool) -> String {
        var lines = [
            "GET /auth HTTP/1.1", "Host: gateway", "X-Forwarded-Method: \(method)", "X-Forwarded-Proto: https",
            "X-Forwarded-Host: \(probe.host)", "X-Forwarded-Uri: \(probe.path)", "X-Forwarded-For: 10.0.0.7",
        ]
        if let agent { lines.append("User-Agent: \(agent)") }
        if credential { lines.append("Authorization: Bearer \(key)") }
        return lines.joined(separator: "\r\n") + "\r\n\r\n"
    }

    /// The answer on the fast decision path, and the answer through Hummingbird's router (a decision request queued
    /// behind a router request goes through the router too).
    func answers(_ request: String, port: Int) async throws -> (fast: RawHTTPConnection.Answer?, routed: RawHTTPConnection.Answer?) {
        let fast = try RawHTTPConnection(port: port)
        await fast.send(request)
        let fastAnswer = await fast.readAnswer()
        let routed = try RawHTTPConnection(port: port)
        await routed.send("GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n" + request)
        _ = await routed.readAnswer()
        return (fastAnswer, await routed.readAnswer())
    }

    @Test("T8: a probe user agent or a health path under a protected route gets 401 without a credential", arguments: probes)
    func t8ProbeWithoutCredentialIs401(_ probe: Probe) async throws {
        try await fixture.withGatewayServer { port in
            for agent in Self.agents {
                for method in ["GET", "HEAD"] {
                    let (fast, routed) = try await answers(decisionRequest(probe, method: method, agent: agent, credential: false), port: port)
                    for (path, answer) in [("fast", fast), ("router", routed)] {
                        let what = "\(path) \(method) \(probe.testDescription) \(agent ?? "no user agent")"
                        #expect(answer?.status == 401, "\(what): \(answer?.statusLine ?? "no answer")")
                        // The challenge is the real route's: it asks for that route's scope.
                        #expect(answer?.header("WWW-Authenticate")?.contains(#"scope="\#(probe.route)""#) == true, "\(what)")
                        #expect(answer?.header("X-Auth-Subject") == nil, "\(what)")
                    }
                }
            }
        }
    }

    @Test("T8 control: with the route's key the same probe is allowed as that route", arguments: probes)
    func t8ProbeWithCredentialIsAllowed(_ probe: Probe) async throws {
        try await fixture.withGatewayServer { port in
            let (fast, routed) = try await answers(decisionRequest(probe, method: "GET", agent: "kube-probe/1.29", credential: true), port: port)
            for answer in [fast, routed] {
                #expect(answer?.status == 200, "\(probe.testDescription): \(answer?.statusLine ?? "no answer")")
                #expect(answer?.header("X-Auth-Route") == probe.route)
                #expect(answer?.header("X-Auth-Subject") == "alice")
            }
        }
    }

    @Test("T8: a forwarded /healthz on the public host no route covers is refused, not answered as the gateway's own health")
    func t8ForwardedGatewayHealthPathIsNotAShortcut() async throws {
        try await fixture.withGatewayServer { port in
            for path in ["/healthz", "/health", "/auth", "/metrics"] {
                let probe = Probe(host: "mcp.example.com", path: path, route: "-")
                let (fast, routed) = try await answers(decisionRequest(probe, method: "GET", agent: "kube-probe/1.29", credential: false), port: port)
                for answer in [fast, routed] {
                    #expect(answer?.status == 403, "\(path): \(answer?.statusLine ?? "no answer")")
                    #expect(answer?.header("X-Auth-Subject") == nil)
                    #expect(answer?.body.contains("\"status\":\"ok\"") == false)
                }
            }
        }
    }
}
