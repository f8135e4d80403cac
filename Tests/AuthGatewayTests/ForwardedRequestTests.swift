import AuthGateway
import HTTPTypes
import Testing

@Suite("Forwarded request")
struct ForwardedRequestTests {
    static let loopback = [IPNetwork("127.0.0.1/32")!]
    static let peer = IPAddress("127.0.0.1")

    @Test("the original request is read from the trusted proxy's X-Forwarded headers")
    func readsForwardedHeaders() throws {
        let headers = forwardedHeaders(method: "POST", host: "MCP.Example.com.:443", uri: "/ffmpeg/run?x=1", client: "6.6.6.6, 198.51.100.4")
        let request = try ForwardedRequest(headers: headers, peer: Self.peer, trustedProxies: Self.loopback)
        #expect(request.method == "POST")
        #expect(request.host == "mcp.example.com")
        #expect(request.path == "/ffmpeg/run")
        #expect(request.query == "x=1")
        #expect(request.clientAddress == IPAddress("198.51.100.4"))
    }

    @Test("a peer outside trusted_proxies is refused, whatever it claims")
    func untrustedPeer() {
        #expect(throws: ForwardedRequest.Refusal.untrustedPeer("192.0.2.1")) {
            try ForwardedRequest(headers: forwardedHeaders(uri: "/a"), peer: IPAddress("192.0.2.1"), trustedProxies: Self.loopback)
        }
        #expect(throws: ForwardedRequest.Refusal.untrustedPeer("unknown")) {
            try ForwardedRequest(headers: forwardedHeaders(uri: "/a"), peer: nil, trustedProxies: Self.loopback)
        }
    }

    static let requiredHeaders = ["X-Forwarded-Method", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Uri", "X-Forwarded-For"]

    @Test("a missing forwarded header is refused", arguments: requiredHeaders)
    func missingHeader(_ name: String) {
        var headers = forwardedHeaders(uri: "/a")
        headers[HTTPField.Name(name)!] = nil
        #expect(throws: ForwardedRequest.Refusal.missing(name)) {
            try ForwardedRequest(headers: headers, peer: Self.peer, trustedProxies: Self.loopback)
        }
    }

    @Test("a repeated forwarded header is refused", arguments: requiredHeaders)
    func repeatedHeader(_ name: String) {
        var headers = forwardedHeaders(uri: "/a")
        headers.append(HTTPField(name: HTTPField.Name(name)!, value: headers[HTTPField.Name(name)!]!))
        #expect(throws: ForwardedRequest.Refusal.repeated(name)) {
            try ForwardedRequest(headers: headers, peer: Self.peer, trustedProxies: Self.loopback)
        }
    }

    @Test("comma lists in host, URI, method or proto are ambiguous and refused")
    func commaLists() {
        for (name, value) in [("X-Forwarded-Host", "a.test, b.test"), ("X-Forwarded-Uri", "/a,/b"), ("X-Forwarded-Method", "GET, POST")] {
            var headers = forwardedHeaders(uri: "/a")
            headers[HTTPField.Name(name)!] = value
            #expect(throws: ForwardedRequest.Refusal.self) { try ForwardedRequest(headers: headers, peer: Self.peer, trustedProxies: Self.loopback) }
        }
    }

    @Test("alias spellings (X_Forwarded_Uri, X.Forwarded.Uri) are never read as the real header")
    func aliasSpellingsIgnored() {
        var headers = forwardedHeaders(uri: "/a")
        headers[HTTPField.Name("X-Forwarded-Uri")!] = nil
        headers.append(HTTPField(name: HTTPField.Name("X_Forwarded_Uri")!, value: "/a"))
        headers.append(HTTPField(name: HTTPField.Name("X.Forwarded.Uri")!, value: "/a"))
        #expect(throws: ForwardedRequest.Refusal.missing("X-Forwarded-Uri")) {
            try ForwardedRequest(headers: headers, peer: Self.peer, trustedProxies: Self.loopback)
        }
    }

    static let ambiguousURIs = [
        "/openmemory/claude/sse/al%2Fice", "/openmemory/claude/sse/al%2fice", "/openmemory/claude/sse/al%5Cice",
        "/openmemory/claude/sse/al%00ice", "/openmemory/claude/sse/%2e%2e", "/openmemory/claude/sse/.%2E",
        "/openmemory/claude/sse/..", "/openmemory/./sse/alice", "/openmemory//sse/alice", "/openmemory/claude/sse/al%zzice",
        "/openmemory/claude/sse/al\\ice", "openmemory/claude", "/a#fragment", "/a b",
    ]

    @Test("encoded separators, dot segments and bad escapes in the path are refused", arguments: ambiguousURIs)
    func ambiguousPath(_ uri: String) {
        #expect(throws: ForwardedRequest.Refusal.self) {
            try ForwardedRequest(headers: forwardedHeaders(uri: uri), peer: Self.peer, trustedProxies: Self.loopback)
        }
    }

    @Test("IPv4-mapped IPv6 peers match IPv4 trusted networks")
    func mappedIPv6Peer() throws {
        _ = try ForwardedRequest(headers: forwardedHeaders(uri: "/a"), peer: IPAddress("::ffff:127.0.0.1"), trustedProxies: Self.loopback)
    }

    @Test("CIDR blocks contain exactly their addresses", arguments: [
        ("10.0.0.0/8", "10.255.1.2", true), ("10.0.0.0/8", "11.0.0.1", false), ("127.0.0.1/32", "127.0.0.2", false),
        ("::1/128", "::1", true), ("fd00::/8", "fd12::1", true), ("fd00::/8", "fe80::1", false), ("0.0.0.0/0", "::1", false),
        ("192.168.1.128/25", "192.168.1.127", false), ("192.168.1.128/25", "192.168.1.200", true),
    ])
    func cidrContainment(_ testCase: (String, String, Bool)) {
        #expect(IPNetwork(testCase.0)!.contains(IPAddress(testCase.1)!) == testCase.2)
    }
}
