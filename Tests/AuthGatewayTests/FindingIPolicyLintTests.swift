import AuthGateway
import Foundation
import Testing

/// Finding I: a forwardAuth route that delivers POSTs to the message endpoint of a backend the gateway also proxies
/// as a session-based (path-style) backend skips session binding; `authctl policy check` warns about it.
@Suite("Finding I: session binding lint")
struct FindingIPolicyLintTests {
    static let proxied = """
          - name: om-proxy
            match: { path: /om/sse/** }
            accept: [api_key]
            backend: { style: path, url: "http://openmemory:8765", path: "/mcp/{client_name}/sse/{subject}" }
        """

    static func warnings(_ routes: String) throws -> [String] {
        SessionBindingLint.warnings(for: try PolicyLoader.load(yaml: testPolicy(routes: proxied + "\n" + routes), file: "p.yaml").policy)
    }

    @Test("finding I: a forwardAuth message route to a proxied backend is warned about, naming file:line", arguments: [
        "match: { path: /om/messages/** }",
        "match: { path: /om/mcp/messages/, methods: [POST] }",
        "match: { path: /om/** }",
        "match: { path: /om/MESSAGES/** }",
    ])
    func warned(_ match: String) throws {
        let warnings = try Self.warnings("""
              - name: om-messages
                \(match)
                accept: [api_key]
                backend: { style: headers, url: "http://OpenMemory:8765/" }
            """)
        #expect(warnings.count == 1, "\(warnings)")
        #expect(warnings.first?.hasPrefix("p.yaml:11: route 'om-messages'") == true, "\(warnings)")
        #expect(warnings.first?.contains("om-proxy") == true)
    }

    @Test("finding I: GET-only routes, other backends, routes without a message path and without a URL are not", arguments: [
        ("match: { path: /om/messages/**, methods: [GET] }", "backend: { style: headers, url: \"http://openmemory:8765\" }"),
        ("match: { path: /om/messages/** }", "backend: { style: headers, url: \"http://other:8765\" }"),
        ("match: { path: /om/messages/** }", "backend: { style: headers, url: \"http://openmemory:9999\" }"),
        ("match: { path: \"/om/{client_name}/sse/{user_id}\" }", "backend: { style: headers, url: \"http://openmemory:8765\" }"),
        ("match: { path: /om/messages/** }", "backend: { style: headers }"),
    ])
    func notWarned(_ match: String, _ backend: String) throws {
        let warnings = try Self.warnings("""
              - name: other
                \(match)
                accept: [api_key]
                \(backend)
            """)
        #expect(warnings.isEmpty, "\(warnings)")
    }

    @Test("finding I: authctl policy check prints the warning and still exits 0; the example policy has none")
    func policyCheckCommand() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("authgateway-lint-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let file = directory.appendingPathComponent("weak.yaml")
        try testPolicy(routes: Self.proxied + """

              - name: om-messages
                match: { path: /om/messages/** }
                accept: [api_key]
                backend: { style: headers, url: "http://openmemory:8765" }
            """).write(to: file, atomically: true, encoding: .utf8)
        let weak = try ProcessRunner.run("authctl", ["policy", "check", file.path])
        #expect(weak.status == 0, "\(weak.stderr)")
        #expect(weak.stderr.contains("warning: \(file.path):11: route 'om-messages'"), "\(weak.stderr)")
        for policy in ["policies/example.yaml", "deploy/policies"] {
            let example = try ProcessRunner.run("authctl", ["policy", "check", policy], environment: ["TRELLO_TOKEN": "t"])
            #expect(example.status == 0, "\(example.stderr)")
            #expect(!example.stderr.contains("without session binding"), "\(policy): \(example.stderr)")
        }
    }
}
