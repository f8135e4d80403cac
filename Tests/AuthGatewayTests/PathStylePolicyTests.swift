import AuthGateway
import Testing

@Suite("Policy: backend style path")
struct PathStylePolicyTests {
    static func policy(_ route: String) -> String {
        """
        gateway:
          public_url: https://mcp.example.com
          trusted_proxies: [127.0.0.1/32]
        routes:
        \(route)
        """
    }

    static let valid = """
          - name: om
            match: { host: mcp.example.com, path: /openmemory/sse/** }
            accept: [api_key]
            backend:
              style: path
              url: http://10.0.0.9:8765/base/
              path: /mcp/{client_name}/sse/{subject}
              max_streams: 7
              idle_timeout: 2m
              failure_threshold: 4
              cooldown: 15s
              health_interval: 5s
              health_path: /healthz
        """

    @Test("a path-style route loads with its upstream, template and limits")
    func validRouteLoads() throws {
        let route = try #require(PolicyLoader.load(yaml: Self.policy(Self.valid)).policy.routes.first)
        let backend = try #require(route.backend.pathStyle)
        #expect(backend.origin == "http://10.0.0.9:8765")
        #expect(backend.basePath == "/base")
        #expect(backend.template.segments == [.literal("mcp"), .variable(.clientName), .literal("sse"), .variable(.subject)])
        #expect(backend.maxStreams == 7)
        #expect(backend.idleTimeout == .seconds(120))
        #expect(backend.breaker == CircuitBreaker.Settings(failureThreshold: 4, cooldown: .seconds(15)))
        #expect(backend.healthInterval == .seconds(5))
        #expect(backend.healthPath == "/healthz")
    }

    @Test("defaults: 100 streams, 5 minutes idle, 3 failures, 30 s cool-down, health at /")
    func defaults() throws {
        let yaml = Self.policy("  - name: om\n    match: { path: /om/** }\n    accept: [api_key]\n    backend: { style: path, url: \"http://om:1\", path: \"/u/{subject}\" }\n")
        let backend = try #require(PolicyLoader.load(yaml: yaml).policy.routes.first?.backend.pathStyle)
        #expect(backend.maxStreams == 100 && backend.idleTimeout == .seconds(300) && backend.healthPath == "/")
        #expect(backend.breaker == CircuitBreaker.Settings(failureThreshold: 3, cooldown: .seconds(30)))
    }

    /// (what, route YAML, line, message fragment)
    static let invalid: [(String, String, Int, String)] = [
        ("unknown variable", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { style: path, url: \"http://b:1\", path: \"/mcp/{user_id}/sse\" }\n", 8, "unknown variable '{user_id}'"),
        ("no variable", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { style: path, url: \"http://b:1\", path: /mcp/sse }\n", 8, "names no identity variable"),
        ("dot segment in template", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { style: path, url: \"http://b:1\", path: \"/mcp/../{subject}\" }\n", 8, "segment '..'"),
        ("percent in template", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { style: path, url: \"http://b:1\", path: \"/m%2Fx/{subject}\" }\n", 8, "must be a plain literal"),
        ("partial variable", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { style: path, url: \"http://b:1\", path: \"/u-{subject}\" }\n", 8, "must be a plain literal"),
        ("relative template", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { style: path, url: \"http://b:1\", path: \"mcp/{subject}\" }\n", 8, "must start with '/'"),
        ("missing path", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { style: path, url: \"http://b:1\" }\n", 8, "needs 'path'"),
        ("missing url", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { style: path, path: \"/u/{subject}\" }\n", 8, "needs 'url'"),
        ("match with captures", "  - name: a\n    match: { path: \"/a/{user}/**\" }\n    accept: [api_key]\n    backend: { style: path, url: \"http://b:1\", path: \"/u/{subject}\" }\n", 6, "literal prefix ending in /**"),
        ("match without tail", "  - name: a\n    match: { path: /a/sse }\n    accept: [api_key]\n    backend: { style: path, url: \"http://b:1\", path: \"/u/{subject}\" }\n", 6, "literal prefix ending in /**"),
        ("path_context", "  - name: a\n    match: { path: /a/** }\n    accept: [path_context]\n    path_context: { networks: [10.0.0.0/8], subject: u }\n    backend: { style: path, url: \"http://b:1\", path: \"/u/{subject}\" }\n", 7, "cannot accept path_context"),
        ("strip_prefix", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { style: path, url: \"http://b:1\", path: \"/u/{subject}\", strip_prefix: /a }\n", 8, "strip_prefix does not apply"),
        ("path keys on headers style", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { url: \"http://b:1\", max_streams: 5 }\n", 8, "applies only to style: path"),
        ("bad max_streams", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { style: path, url: \"http://b:1\", path: \"/u/{subject}\", max_streams: 0 }\n", 8, "max_streams must be a whole number"),
        ("bad cooldown", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { style: path, url: \"http://b:1\", path: \"/u/{subject}\", cooldown: soon }\n", 8, "must be a duration"),
        ("unknown style", "  - name: a\n    match: { path: /a/** }\n    accept: [api_key]\n    backend: { style: rewrite, url: \"http://b:1\" }\n", 8, "headers, credential or path"),
    ]

    @Test("a bad path-style route is refused with file:line and what is wrong", arguments: invalid)
    func invalidRoute(_ testCase: (String, String, Int, String)) throws {
        let (_, route, line, fragment) = testCase
        let error = try #require(throws: PolicyLoadError.self) { try PolicyLoader.load(yaml: Self.policy(route), file: "bad.yaml") }
        let matching = error.errors.filter { $0.message.contains(fragment) }
        #expect(!matching.isEmpty, "expected '\(fragment)' in \(error.description)")
        #expect(matching.first?.line == line, "\(error.description)")
        #expect(error.description.contains("bad.yaml:\(line): "))
    }

    @Test("the example policy proxies /openmemory/sse/** to OPENMEMORY_URL, its only OpenMemory route")
    func examplePolicy() throws {
        let loaded = try PolicyLoader.load(
            path: PolicyLoaderTests.packageRoot.appendingPathComponent("policies/example.yaml").path, environment: ["OPENMEMORY_URL": "http://10.1.1.1:8765"])
        let proxied = try #require(loaded.policy.routes.first { $0.backend.pathStyle != nil })
        #expect(proxied.path.description == "/openmemory/sse/**")
        #expect(proxied.backend.pathStyle?.upstream == "http://10.1.1.1:8765")
        #expect(proxied.backend.pathStyle?.template.description == "/mcp/{client_name}/sse/{subject}")
        // Issue 11 finding I: no forwardAuth route to OpenMemory beside it (it would skip session binding).
        #expect(!loaded.policy.routes.contains { $0.path.description.hasPrefix("/openmemory") && $0.backend.pathStyle == nil })
        #expect(proxied.issuers == ["builtin", "corp"])
    }
}
