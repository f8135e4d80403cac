import AuthGateway
import Foundation
import Testing

@Suite("Traefik configuration")
struct TraefikConfigurationTests {
    func generate(_ routes: String) throws -> [String: Any] {
        let policy = try PolicyLoader.load(yaml: testPolicy(routes: routes), environment: ["TRELLO_TOKEN": "x"]).policy
        let configuration = try TraefikConfiguration(policy: policy, options: .init(gatewayURL: "http://10.0.0.5:8080")).dynamicConfiguration()
        return try #require(configuration["http"] as? [String: Any])
    }

    static let routes = """
          - name: memory
            match: { host: mcp.example.com, path: "/openmemory/{client}/sse/{user}", methods: [GET, POST] }
            accept: [api_key]
            backend: { url: "http://om:8765" }
          - name: tools
            match: { host: mcp.example.com, path: "/ffmpeg/**" }
            accept: [api_key]
            backend: { url: "http://ff:80", strip_prefix: /ffmpeg }
          - name: trello
            match: { path: "/trello/**" }
            accept: [api_key]
            backend: { style: credential, header: X-Trello-Token, value_env: TRELLO_TOKEN, url: "http://tr:80" }
        """

    @Test("every route gets a router whose first middleware is forwardAuth, in policy order")
    func routersCarryForwardAuth() throws {
        let http = try generate(Self.routes)
        let routers = try #require(http["routers"] as? [String: [String: Any]])
        for name in ["memory", "tools", "trello"] {
            let router = try #require(routers[name])
            #expect((router["middlewares"] as? [String])?.first == "authgateway")
            #expect(router["service"] as? String == name)
        }
        let priorities = ["memory", "tools", "trello"].compactMap { routers[$0]?["priority"] as? Int }
        #expect(priorities == priorities.sorted(by: >), "earlier routes must win")
        #expect((routers["tools"]?["middlewares"] as? [String]) == ["authgateway", "tools-strip"])
    }

    @Test("forwardAuth never trusts client forwarded headers and relays every identity and credential header")
    func forwardAuthMiddleware() throws {
        let http = try generate(Self.routes)
        let middlewares = try #require(http["middlewares"] as? [String: [String: Any]])
        let forwardAuth = try #require(middlewares["authgateway"]?["forwardAuth"] as? [String: Any])
        #expect(forwardAuth["address"] as? String == "http://10.0.0.5:8080/auth")
        #expect(forwardAuth["trustForwardHeader"] as? Bool == false)
        #expect(forwardAuth["maxResponseBodySize"] as? Int != nil)
        let headers = try #require(forwardAuth["authResponseHeaders"] as? [String])
        for name in ["X-Auth-Subject", "X-Auth-Method", "X-Auth-Scopes", "X-Auth-Client", "X-Auth-Issuer", "X-Auth-Key-Id", "X-Auth-Route", "Authorization", "X-API-Key", "X-Trello-Token"] {
            #expect(headers.contains(name), "\(name)")
        }
    }

    @Test("well-known discovery paths go to the gateway without auth, above every route")
    func wellKnownWithoutAuth() throws {
        let http = try generate(Self.routes)
        let routers = try #require(http["routers"] as? [String: [String: Any]])
        let wellKnown = try #require(routers["authgateway-well-known"])
        #expect(wellKnown["middlewares"] == nil)
        #expect((wellKnown["rule"] as? String)?.contains("/.well-known/oauth-protected-resource") == true)
        let top = routers.values.compactMap { $0["priority"] as? Int }.max()
        #expect(wellKnown["priority"] as? Int == top)
    }

    @Test("finding 15: the well-known and /oauth/ router matches only the public host, not every host Traefik serves")
    func wellKnownOnPublicHostOnly() throws {
        let http = try generate(Self.routes)
        let routers = try #require(http["routers"] as? [String: [String: Any]])
        let rule = try #require(routers["authgateway-well-known"]?["rule"] as? String)
        #expect(rule.hasPrefix("Host(`mcp.example.com`) && ("), "\(rule)")
        #expect(rule.hasSuffix(")"), "\(rule)")
        #expect(rule.contains("PathPrefix(`/oauth/`)"), "\(rule)")
    }

    @Test("rules match the same paths as the policy templates", arguments: [
        ("/openmemory/{client}/sse/{user}", "PathRegexp(`^/openmemory/[^/]+/sse/[^/]+/?$`)"),
        ("/ffmpeg/**", "(Path(`/ffmpeg`) || PathPrefix(`/ffmpeg/`))"),
        ("/mcp", "(Path(`/mcp`) || Path(`/mcp/`))"),
        ("/a.b/{x}/**", "PathRegexp(`^/a\\.b/[^/]+(/.*)?$`)"),
    ])
    func pathRules(_ testCase: (String, String)) throws {
        let http = try generate("  - name: r\n    match: { path: \"\(testCase.0)\" }\n    accept: [api_key]\n    backend: { url: \"http://b:1\" }\n")
        let routers = try #require(http["routers"] as? [String: [String: Any]])
        #expect(routers["r"]?["rule"] as? String == testCase.1)
    }

    @Test("a route without backend.url cannot be generated, and the error names it")
    func routeWithoutURL() throws {
        let policy = try PolicyLoader.load(yaml: testPolicy(routes: "  - name: lost\n    match: { path: /x }\n    accept: [api_key]\n")).policy
        let error = try #require(throws: TraefikConfiguration.Problem.self) {
            try TraefikConfiguration(policy: policy, options: .init()).dynamicConfiguration()
        }
        #expect(error.description.contains("route 'lost'"))
    }

    @Test("a path-style route goes to the gateway itself, without forwardAuth, in first-match order")
    func pathStyleRouteGoesToGateway() throws {
        let routes = """
              - name: bound
                match: { host: mcp.example.com, path: "/openmemory/{client}/sse/{user}" }
                accept: [api_key]
                backend: { url: "http://om:8765" }
              - name: proxied
                match: { host: mcp.example.com, path: /openmemory/sse/** }
                accept: [api_key]
                backend: { style: path, url: "http://om:8765", path: "/mcp/{client_name}/sse/{subject}" }
              - name: tools
                match: { path: "/ffmpeg/**" }
                accept: [api_key]
                backend: { url: "http://ff:80" }
            """
        let http = try generate(routes)
        let routers = try #require(http["routers"] as? [String: [String: Any]])
        let proxied = try #require(routers["proxied"])
        #expect(proxied["service"] as? String == "authgateway")
        #expect(proxied["middlewares"] == nil)
        #expect(proxied["rule"] as? String == "Host(`mcp.example.com`) && (Path(`/openmemory/sse`) || PathPrefix(`/openmemory/sse/`))")
        let services = try #require(http["services"] as? [String: Any])
        #expect(services["proxied"] == nil, "the upstream is the gateway's business, not Traefik's")
        let priorities = ["bound", "proxied", "tools"].compactMap { routers[$0]?["priority"] as? Int }
        #expect(priorities.count == 3 && priorities == priorities.sorted(by: >))
    }
}

