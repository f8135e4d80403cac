@testable import AuthGateway
import Foundation
import HTTPTypes
import Testing

/// Issue 11 finding 3: every spelling of a path that Traefik or a backend reads as the same path reaches the same
/// route here, or is refused. The table (`e2e/path_spellings.json`) is checked against real Traefik 3.7 by
/// `e2e/test_path_spellings.py`; here the gateway decides each spelling as it arrives unnormalised.
@Suite("Finding 3: path spellings")
struct Finding3PathSpellingTests {
    struct Table: Decodable {
        struct Route: Decodable { let name: String, path: String }
        struct Spelling: Decodable, CustomTestStringConvertible {
            let path: String
            let traefik: String
            let gateway: String
            let captures: [String: String]?
            var testDescription: String { path }
        }
        let routes: [Route]
        let spellings: [Spelling]
    }

    static let table: Table = {
        let url = ProcessRunner.packageRoot.appendingPathComponent("e2e/path_spellings.json")
        // swiftlint:disable:next force_try
        return try! JSONDecoder().decode(Table.self, from: Data(contentsOf: url))
    }()

    static let matcher: RouteMatcher = {
        let routes = table.routes.map { "  - { name: \($0.name), match: { path: \"\($0.path)\" }, accept: [api_key] }" }.joined(separator: "\n")
        // swiftlint:disable:next force_try
        return RouteMatcher(routes: try! PolicyLoader.load(yaml: testPolicy(routes: routes)).policy.routes)
    }()

    static let loopback = [IPNetwork("127.0.0.1/32")!]

    /// The route name, "none" or "refused", and the captures of a match.
    static func decide(_ request: () throws -> ForwardedRequest) -> (String, [String: String]) {
        guard let request = try? request() else { return ("refused", [:]) }
        switch matcher.match(request) {
        case .matched(let matched): return (matched.route.name, matched.captures)
        case .noRoute: return ("none", [:])
        default: return ("refused", [:])
        }
    }

    @Test("finding 3: each spelling reaches the route Traefik routes it to, or is refused", arguments: table.spellings)
    func spelling(_ row: Table.Spelling) {
        #expect(row.gateway == row.traefik || row.gateway == "refused", "the table itself must never route elsewhere than Traefik")
        let forwarded = Self.decide { try ForwardedRequest(headers: forwardedHeaders(uri: row.path), peer: IPAddress("127.0.0.1"), trustedProxies: Self.loopback) }
        #expect(forwarded.0 == row.gateway)
        if let captures = row.captures { #expect(forwarded.1 == captures) }
        let head = HTTPRequest(method: .get, scheme: nil, authority: "mcp.example.com", path: row.path, headerFields: [:])
        let direct = Self.decide { try ForwardedRequest(direct: head, peer: IPAddress("127.0.0.1"), trustedProxies: Self.loopback) }
        #expect(direct.0 == row.gateway, "a direct request decides as a forwarded one")
    }

    @Test("finding 3: %61dmin is matched as admin, so the stricter route listed first wins")
    func encodedUnreservedLiteral() throws {
        let request = try ForwardedRequest(headers: forwardedHeaders(uri: "/ffmpeg/%61dmin/purge?x=%61"), peer: IPAddress("127.0.0.1"), trustedProxies: Self.loopback)
        guard case .matched(let matched) = Self.matcher.match(request) else { Issue.record("no match"); return }
        #expect(matched.route.name == "ffmpeg-admin")
        #expect(request.path == "/ffmpeg/admin/purge", "the path decided on is the normalised one")
        #expect(request.query == "x=%61", "the query is not touched")
    }

    @Test("finding 3: escapes that stay encoded are upper-cased, so %3a and %3A are one spelling")
    func escapeCase() throws {
        let lower = try ForwardedRequest(headers: forwardedHeaders(uri: "/ffmpeg/a%3ab%c3%a9"), peer: IPAddress("127.0.0.1"), trustedProxies: Self.loopback)
        let upper = try ForwardedRequest(headers: forwardedHeaders(uri: "/ffmpeg/a%3Ab%C3%A9"), peer: IPAddress("127.0.0.1"), trustedProxies: Self.loopback)
        #expect(lower.path == "/ffmpeg/a%3Ab%C3%A9")
        #expect(lower.path == upper.path)
    }

    @Test("finding 3: an announced message path is normalised as a request path is, so the client's request matches its binding")
    func announcedPathNormalised() throws {
        let target = try #require(ProxyEndpoint.upstreamTarget(of: "/messages/%7euser%3a1/?session_id=abc", origin: "http://127.0.0.1:9"))
        #expect(target.path == "/messages/~user%3A1/")
        let request = try ForwardedRequest(headers: forwardedHeaders(uri: "/messages/%7Euser%3A1/"), peer: IPAddress("127.0.0.1"), trustedProxies: Self.loopback)
        #expect(request.path == target.path)
    }

    @Test("finding 3: a literal is compared byte for byte, never by Unicode equivalence")
    func literalBytes() throws {
        // U+212A KELVIN SIGN is canonically equivalent to "K": Swift's == says equal, Traefik's byte compare does not.
        let routes = """
              - { name: kelvin, match: { path: "/\u{212A}ey" }, accept: [api_key] }
              - { name: rest, match: { path: "/**" }, accept: [api_key] }
            """
        let matcher = RouteMatcher(routes: try PolicyLoader.load(yaml: testPolicy(routes: routes)).policy.routes)
        let request = try ForwardedRequest(headers: forwardedHeaders(uri: "/Key"), peer: IPAddress("127.0.0.1"), trustedProxies: Self.loopback)
        guard case .matched(let matched) = matcher.match(request) else { Issue.record("no match"); return }
        #expect(matched.route.name == "rest")
    }
}

/// Issue 11 finding F, for identities taken from the path: a capture with surrounding whitespace is refused.
@Suite("Finding F: path captures with surrounding whitespace")
struct FindingFCaptureWhitespaceTests {
    @Test("finding F: a path capture with leading or trailing whitespace is not a safe identity value", arguments: [
        "/openmemory/claude/sse/alice%20", "/openmemory/claude/sse/%20alice", "/openmemory/claude/sse/alice%C2%A0",
    ])
    func captureWhitespace(_ uri: String) throws {
        let request = try ForwardedRequest(headers: forwardedHeaders(uri: uri), peer: IPAddress("127.0.0.1"), trustedProxies: Finding3PathSpellingTests.loopback)
        guard case .unsafeCapture(_, let capture) = Finding3PathSpellingTests.matcher.match(request) else {
            Issue.record("\(uri) was not refused")
            return
        }
        #expect(capture == "user_id")
    }
}
