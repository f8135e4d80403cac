@testable import AuthGateway
import Testing

@Suite("Identity values in upstream paths")
struct IdentityPathValueTests {
    @Test("unsafe values are refused", arguments: [
        ("", IdentityPathValue.Problem.empty),
        ("../admin", .dotDot),
        ("..", .dotDot),
        (".", .dotDot),
        ("a..b", .dotDot),
        ("a/b", .slash),
        ("a\\b", .slash),
        ("a%2Fb", .percent),
        ("%2e%2e", .percent),
        ("a\u{0}b", .control),
        ("a\nb", .control),
        ("a\u{7F}", .control),
        ("a\u{85}b", .control),
        ("a\u{2028}b", .control),
        (String(repeating: "x", count: 257), .tooLong),
    ])
    func refused(_ testCase: (String, IdentityPathValue.Problem)) {
        #expect(IdentityPathValue.problem(with: testCase.0) == testCase.1)
    }

    @Test("ordinary names pass", arguments: ["alice", "alice@example.com", "e2e-laptop", "Zoë", "a.b", "x_1~2", String(repeating: "x", count: 256)])
    func accepted(_ value: String) {
        #expect(IdentityPathValue.problem(with: value) == nil)
    }

    static func principal(subject: String, client: String = "claude") -> Principal {
        Principal(subject: subject, method: .apiKey, scopes: [], groups: [], client: client, issuer: "", keyID: "k", restrictedToRoute: nil)
    }

    @Test("the template is filled from the principal, characters outside pchar percent-encoded", arguments: [
        ("alice", "claude", "/mcp/claude/sse/alice"),
        ("alice smith", "claude", "/mcp/claude/sse/alice%20smith"),
        ("a?b#c", "cli", "/mcp/cli/sse/a%3Fb%23c"),
        ("Zoë", "cli", "/mcp/cli/sse/Zo%C3%AB"),
        ("user@example.com", "x:1", "/mcp/x:1/sse/user@example.com"),
    ])
    func rendered(_ testCase: (String, String, String)) throws {
        let template = try UpstreamPathTemplate("/mcp/{client_name}/sse/{subject}")
        #expect(try template.render(for: Self.principal(subject: testCase.0, client: testCase.1)) == testCase.2)
    }

    @Test("a trailing slash in the template is kept")
    func trailingSlash() throws {
        #expect(try UpstreamPathTemplate("/u/{subject}/").render(for: Self.principal(subject: "bob")) == "/u/bob/")
    }

    @Test("rendering refuses an unsafe subject or client and names the variable", arguments: [
        ("../admin", "claude", "subject"),
        ("alice", "../x", "client_name"),
        ("a%2Fb", "claude", "subject"),
        ("alice", "", "client_name"),
    ])
    func renderRefuses(_ testCase: (String, String, String)) throws {
        let template = try UpstreamPathTemplate("/mcp/{client_name}/sse/{subject}")
        let error = try #require(throws: UpstreamPathTemplate.RenderError.self) {
            try template.render(for: Self.principal(subject: testCase.0, client: testCase.1))
        }
        #expect(error.variable == testCase.2)
    }
}
