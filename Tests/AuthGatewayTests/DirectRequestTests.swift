import AuthGateway
import HTTPTypes
import Testing

/// The request description the reverse proxy decides on: built from the request the gateway itself received.
@Suite("Direct requests (reverse proxy)")
struct DirectRequestTests {
    static let trusted = [IPNetwork("127.0.0.1/32")!]

    static func head(path: String, authority: String? = "mcp.example.com", headers: [(String, String)] = []) -> HTTPRequest {
        var fields = HTTPFields()
        for (name, value) in headers { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return HTTPRequest(method: .get, scheme: nil, authority: authority, path: path, headerFields: fields)
    }

    @Test("method, host and path come from the request itself, never from X-Forwarded-Host/Uri")
    func fromTheRequest() throws {
        let head = Self.head(path: "/openmemory/sse?x=1", authority: "MCP.example.com:443", headers: [("X-Forwarded-Host", "evil.test"), ("X-Forwarded-Uri", "/admin")])
        let request = try ForwardedRequest(direct: head, peer: IPAddress("127.0.0.1"), trustedProxies: Self.trusted)
        #expect(request.method == "GET")
        #expect(request.host == "mcp.example.com")
        #expect(request.path == "/openmemory/sse")
        #expect(request.query == "x=1")
    }

    @Test("a trusted proxy's right-most X-Forwarded-For and X-Forwarded-Proto are used")
    func trustedProxy() throws {
        let head = Self.head(path: "/a", headers: [("X-Forwarded-For", "10.9.9.9, 203.0.113.7"), ("X-Forwarded-Proto", "https")])
        let request = try ForwardedRequest(direct: head, peer: IPAddress("127.0.0.1"), trustedProxies: Self.trusted)
        #expect(request.clientAddress == IPAddress("203.0.113.7"))
        #expect(request.proto == "https")
    }

    @Test("from any other peer the peer is the client and forwarded headers are ignored")
    func untrustedPeer() throws {
        let head = Self.head(path: "/a", headers: [("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-Proto", "https")])
        let request = try ForwardedRequest(direct: head, peer: IPAddress("198.51.100.4"), trustedProxies: Self.trusted)
        #expect(request.clientAddress == IPAddress("198.51.100.4"))
        #expect(request.proto == "http")
    }

    @Test("ambiguous paths and hosts are refused", arguments: [
        ("/openmemory/sse/../admin", "mcp.example.com"),
        ("/openmemory/sse/a%2Fb", "mcp.example.com"),
        ("/openmemory/sse/%2e%2e/x", "mcp.example.com"),
        ("/openmemory//sse", "mcp.example.com"),
        ("/a\\b", "mcp.example.com"),
        ("/a", "bad host"),
    ])
    func refused(_ testCase: (String, String)) {
        #expect(throws: ForwardedRequest.Refusal.self) {
            try ForwardedRequest(direct: Self.head(path: testCase.0, authority: testCase.1), peer: IPAddress("127.0.0.1"), trustedProxies: Self.trusted)
        }
    }

    @Test("a garbled X-Forwarded-For from the trusted proxy is refused, not ignored")
    func garbledForwardedFor() {
        #expect(throws: ForwardedRequest.Refusal.self) {
            try ForwardedRequest(direct: Self.head(path: "/a", headers: [("X-Forwarded-For", "not-an-ip")]), peer: IPAddress("127.0.0.1"), trustedProxies: Self.trusted)
        }
    }
}
