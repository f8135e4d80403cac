import AuthGateway
import Foundation
import Testing

@Suite("Policy loading")
struct PolicyLoaderTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("the example policy loads with the seed routes")
    func examplePolicyLoads() throws {
        let loaded = try PolicyLoader.load(path: Self.packageRoot.appendingPathComponent("policies/example.yaml").path, environment: [:])
        let names = loaded.policy.routes.map(\.name)
        #expect(names == ["openmemory-proxy", "ffmpeg", "trello"])
        let openmemory = try #require(loaded.policy.routes.first { $0.name == "openmemory-proxy" })
        #expect(openmemory.path.description == "/openmemory/sse/**")
        #expect(openmemory.requirements.scopes == ["memory"])
        #expect(openmemory.accept == [.apiKey, .jwt])
        #expect(loaded.policy.routes.first { $0.name == "ffmpeg" }?.resource == "https://mcp.example.com/ffmpeg")
        #expect(loaded.warnings.contains { $0.contains("TRELLO_TOKEN") })
    }

    @Test("the example policy takes issuer and backend URLs from the environment")
    func examplePolicyReadsEnvironment() throws {
        let environment = ["CORP_ISSUER": "https://idp.test/realms/x", "CORP_JWKS_URL": "http://127.0.0.1:9/jwks", "FFMPEG_URL": "http://10.1.2.3:9000", "TRELLO_TOKEN": "t0ken"]
        let loaded = try PolicyLoader.load(path: Self.packageRoot.appendingPathComponent("policies/example.yaml").path, environment: environment)
        let corp = try #require(loaded.policy.issuer(named: "corp"))
        #expect(corp.issuer == "https://idp.test/realms/x")
        #expect(corp.keySource == .jwksURL("http://127.0.0.1:9/jwks"))
        #expect(loaded.policy.routes.first { $0.name == "ffmpeg" }?.backend.url == "http://10.1.2.3:9000")
        #expect(!loaded.warnings.contains { $0.contains("TRELLO_TOKEN") })
    }

    static let validHead = """
        gateway:
          public_url: https://mcp.example.com
          trusted_proxies: [127.0.0.1/32]
        """

    /// Invalid policies, each with the line and a fragment of the message it must produce.
    static let invalidPolicies: [(String, String, Int, String)] = [
        ("unknown top-level key", validHead + "\nroutse: []\n", 4, "unknown key 'routse'"),
        ("missing public_url", "gateway:\n  trusted_proxies: []\nroutes: []\n", 2, "public_url is required"),
        ("bad CIDR", "gateway:\n  public_url: https://x.test\n  trusted_proxies: [127.0.0.1/33]\n", 3, "not an IP address or CIDR"),
        ("unknown route key", validHead + "\nroutes:\n  - name: a\n    match: { path: /a }\n    accept: [api_key]\n    requires: { scopes: [x] }\n", 8, "unknown key 'requires'"),
        ("unknown credential kind", validHead + "\nroutes:\n  - name: a\n    match: { path: /a }\n    accept: [password]\n", 7, "unknown credential kind 'password'"),
        ("bind to a missing capture", validHead + "\nroutes:\n  - name: a\n    match: { path: \"/a/{user}\" }\n    accept: [api_key]\n    require: { bind: { user_id: subject } }\n", 8, "no capture '{user_id}'"),
        ("tail not last", validHead + "\nroutes:\n  - name: a\n    match: { path: /a/**/b }\n    accept: [api_key]\n", 6, "'**' is allowed only as the last segment"),
        ("alg none", validHead + "\nissuers:\n  corp:\n    issuer: https://i.test\n    jwks_url: https://i.test/jwks\n    algorithms: [none]\n", 8, "'none' is refused"),
        ("HS256", validHead + "\nissuers:\n  corp:\n    issuer: https://i.test\n    jwks_url: https://i.test/jwks\n    algorithms: [RS256, HS256]\n", 8, "'HS256' is refused"),
        ("leeway too large", validHead + "\nissuers:\n  corp:\n    issuer: https://i.test\n    jwks_url: https://i.test/jwks\n    leeway: 1h\n", 8, "leeway must be at most 300s"),
        ("jwt without issuers", validHead + "\nroutes:\n  - name: a\n    match: { path: /a }\n    accept: [jwt]\n", 7, "defines no issuers"),
        ("path_context without networks", validHead + "\nroutes:\n  - name: a\n    match: { path: \"/a/{u}\" }\n    accept: [path_context]\n", 7, "add 'path_context'"),
        ("credential backend without secret source", validHead + "\nroutes:\n  - name: a\n    match: { path: /a }\n    accept: [api_key]\n    backend: { style: credential, header: Authorization }\n", 8, "exactly one of value_env or value_file"),
        ("unset environment variable", "gateway:\n  public_url: ${NOPE_URL}\n  trusted_proxies: []\n", 2, "environment variable NOPE_URL is not set"),
        ("YAML syntax error", validHead + "\nroutes:\n  - name: [unclosed\n", 6, "invalid YAML"),
        ("duplicate route name", validHead + "\nroutes:\n  - name: a\n    match: { path: /a }\n    accept: [api_key]\n  - name: a\n    match: { path: /b }\n    accept: [api_key]\n", 8, "route name 'a' is used twice"),
        ("identity header with underscore", "gateway:\n  public_url: https://x.test\n  trusted_proxies: []\n  identity_headers: { subject: X_User }\n", 4, "no '_' or '.'"),
    ]

    @Test("an invalid policy is refused with file:line and what is wrong", arguments: invalidPolicies)
    func invalidPolicyIsRefused(_ testCase: (String, String, Int, String)) throws {
        let (_, yaml, line, fragment) = testCase
        let error = try #require(throws: PolicyLoadError.self) { try PolicyLoader.load(yaml: yaml, file: "bad.yaml") }
        let matching = error.errors.filter { $0.message.contains(fragment) }
        #expect(!matching.isEmpty, "expected '\(fragment)' in \(error.description)")
        #expect(matching.first?.line == line, "\(error.description)")
        #expect(error.description.contains("bad.yaml:\(line): "))
    }

    @Test("every problem in a file is reported, not just the first")
    func allErrorsAreReported() throws {
        let yaml = Self.validHead + "\nroutes:\n  - name: a\n    match: { path: /a }\n    accept: [nope]\n  - name: b\n    match: { path: b }\n    accept: [api_key]\n"
        let error = try #require(throws: PolicyLoadError.self) { try PolicyLoader.load(yaml: yaml, file: "bad.yaml") }
        #expect(error.errors.count >= 2)
        #expect(error.errors.map(\.line).contains(7))
        #expect(error.errors.map(\.line).contains(9))
    }

    @Test("environment references expand, with defaults for unset variables")
    func environmentReferencesExpand() throws {
        let yaml = "gateway:\n  public_url: ${URL:-https://fallback.test}\n  realm: ${REALM}\n  trusted_proxies: [127.0.0.1]\n"
        let loaded = try PolicyLoader.load(yaml: yaml, environment: ["REALM": "lab"])
        #expect(loaded.policy.gateway.publicURL == "https://fallback.test")
        #expect(loaded.policy.gateway.realm == "lab")
    }

    @Test("a policy directory loads every YAML file in name order and reports errors per file")
    func policyDirectory() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("policy-dir-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try (Self.validHead + "\n").write(to: directory.appendingPathComponent("00-gateway.yaml"), atomically: true, encoding: .utf8)
        try "routes:\n  - name: b\n    match: { path: /b }\n    accept: [api_key]\n".write(to: directory.appendingPathComponent("20-b.yml"), atomically: true, encoding: .utf8)
        try "routes:\n  - name: a\n    match: { path: /a }\n    accept: [api_key]\n".write(to: directory.appendingPathComponent("10-a.yaml"), atomically: true, encoding: .utf8)
        let loaded = try PolicyLoader.load(path: directory.path, environment: [:])
        #expect(loaded.policy.routes.map(\.name) == ["a", "b"])

        try "routes:\n  - name: c\n    match: { path: /c }\n    accept: [bogus]\n".write(to: directory.appendingPathComponent("30-c.yaml"), atomically: true, encoding: .utf8)
        let error = try #require(throws: PolicyLoadError.self) { try PolicyLoader.load(path: directory.path, environment: [:]) }
        #expect(error.description.contains("30-c.yaml:4: "))
    }

    @Test("a missing policy path is an error naming the path")
    func missingPath() throws {
        let error = try #require(throws: PolicyLoadError.self) { try PolicyLoader.load(path: "/nonexistent/policy.yaml") }
        #expect(error.description == "/nonexistent/policy.yaml:1: no such file or directory")
    }
}

@Suite("Path templates")
struct PathTemplateTests {
    static let cases: [(String, String, [String: String]?)] = [
        ("/openmemory/{client}/sse/{user}", "/openmemory/claude/sse/alice", ["client": "claude", "user": "alice"]),
        ("/openmemory/{client}/sse/{user}", "/openmemory/claude/sse/alice/", ["client": "claude", "user": "alice"]),
        ("/openmemory/{client}/sse/{user}", "/openmemory/claude/sse", nil),
        ("/openmemory/{client}/sse/{user}", "/openmemory/claude/sse/alice/extra", nil),
        ("/openmemory/{client}/sse/{user}", "/openmemory//sse/alice", nil),
        ("/ffmpeg/**", "/ffmpeg", [:]),
        ("/ffmpeg/**", "/ffmpeg/", [:]),
        ("/ffmpeg/**", "/ffmpeg/v1/tools", [:]),
        ("/ffmpeg/**", "/ffmpegx/v1", nil),
        ("/ffmpeg/**", "/FFMPEG/v1", nil),
        ("/mcp", "/mcp", [:]),
        ("/mcp", "/mcp/", [:]),
        ("/mcp", "/mcp/x", nil),
        ("/", "/", [:]),
        ("/", "/x", nil),
    ]

    @Test("templates match whole segments", arguments: cases)
    func matching(_ testCase: (String, String, [String: String]?)) throws {
        let (template, path, expected) = testCase
        let segments = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        let captures = try PathTemplate(template).match(segments[...])
        #expect(captures?.mapValues(String.init) == expected)
    }

    @Test("the literal prefix is the path before the first capture or tail")
    func literalPrefix() throws {
        #expect(try PathTemplate("/openmemory/{c}/sse/{u}").literalPrefix == "/openmemory")
        #expect(try PathTemplate("/ffmpeg/**").literalPrefix == "/ffmpeg")
        #expect(try PathTemplate("/**").literalPrefix == "")
    }
}
