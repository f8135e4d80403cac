@testable import AuthGateway
import HTTPTypes
import NIOHTTP1
import Testing

@Suite("Proxy headers")
struct ProxyHeadersTests {
    static let gateway = GatewaySettings(
        publicURL: "https://mcp.example.com", realm: "mcp", trustedProxies: [], identityHeaders: IdentityHeaderNames(), apiKeyHeader: "X-API-Key")

    static func upstream(_ pairs: [(String, String)]) -> HTTPHeaders {
        var fields = HTTPFields()
        for (name, value) in pairs { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return ProxyHeaders(gateway: gateway).upstream(
            from: fields, identity: [HTTPField(name: HTTPField.Name("X-Auth-Subject")!, value: "alice")], clientAddress: IPAddress("203.0.113.7"),
            publicHost: "mcp.example.com", proto: "https", prefix: "/om")
    }

    @Test("the client's credentials, cookies, identity and forwarding headers never go upstream", arguments: [
        "Authorization", "X-API-Key", "Cookie", "X-Auth-Subject", "X-Auth-Route", "X-Auth-Anything", "X-Forwarded-For",
        "X-Forwarded-Host", "Forwarded", "X-Real-IP",
    ])
    func clientHeadersDropped(_ name: String) {
        let headers = Self.upstream([(name, "mallory"), ("Accept", "text/event-stream")])
        #expect(!headers[name].contains("mallory"))
        #expect(headers["Accept"] == ["text/event-stream"])
    }

    @Test("client-sent forwarding and client-address headers of any name never go upstream", arguments: [
        "X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info", "X-Forwarded-Ssl", "X-Forwarded-Scheme",
        "X-Forwarded-Client-Cert", "X-Client-IP", "True-Client-IP",
    ])
    func clientForwardingHeadersDropped(_ name: String) {
        let headers = Self.upstream([(name, "mallory"), ("Accept", "text/event-stream")])
        #expect(!headers.contains { $0.value == "mallory" }, "\(name)")
        #expect(headers["Accept"] == ["text/event-stream"])
    }

    @Test("finding 14: header names with an underscore and URL or method override headers never go upstream", arguments: [
        "Mcp_Session_Id", "X_Auth_Subject", "X-Auth_Subject", "X_Forwarded_For", "Authorization_", "X-Original-URL",
        "X-Rewrite-URL", "X-Original-URI", "X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override",
    ])
    func underscoreAndOverridesDropped(_ name: String) {
        let headers = Self.upstream([(name, "mallory"), ("Mcp-Session-Id", "s1")])
        #expect(!headers[name].contains("mallory"))
        #expect(!headers.contains { $0.value == "mallory" }, "\(name)")
        #expect(headers["Mcp-Session-Id"] == ["s1"])
    }

    @Test("finding G: an upstream Set-Cookie for a gateway cookie never reaches the client, others do", arguments: [
        ("__Host-authgateway_csrf=planted; Path=/; Secure; HttpOnly", false),
        ("authgateway_csrf=planted; Path=/oauth/", false),
        ("__host-AuthGateway_csrf=planted; Path=/; Secure", false),
        ("  __Secure-authgateway_session=x; Secure", false),
        ("__Host-authgateway_csrf", false),
        ("session=abc; Path=/; HttpOnly", true),
        ("my_authgateway_pref=1", true),
    ])
    func gatewayCookiesDropped(_ cookie: String, _ kept: Bool) {
        var upstream = HTTPHeaders()
        upstream.add(name: "Set-Cookie", value: cookie)
        upstream.add(name: "Set-Cookie", value: "theme=dark")
        let fields = ProxyHeaders.downstream(from: upstream)
        #expect(fields[values: .setCookie] == (kept ? [cookie, "theme=dark"] : ["theme=dark"]), "\(cookie)")
        // The rule covers the name the authorization server really uses.
        #expect(ProxyHeaders.setsGatewayCookie("__Host-\(AuthorizeEndpoint.csrfCookie)=x; Path=/"))
    }

    @Test("hop-by-hop headers and those the Connection header lists are dropped", arguments: [
        "Connection", "Keep-Alive", "TE", "Trailer", "Upgrade", "Proxy-Authorization", "X-Hop",
    ])
    func hopByHopDropped(_ name: String) {
        let headers = Self.upstream([("Connection", "keep-alive, X-Hop"), (name, "1"), ("Mcp-Session-Id", "s1")])
        #expect(headers[name].isEmpty)
        #expect(headers["Mcp-Session-Id"] == ["s1"])
    }

    @Test("the gateway adds its identity and forwarding headers")
    func gatewayHeadersAdded() {
        let headers = Self.upstream([])
        #expect(headers["X-Auth-Subject"] == ["alice"])
        #expect(headers["X-Forwarded-For"] == ["203.0.113.7"])
        #expect(headers["X-Forwarded-Host"] == ["mcp.example.com"])
        #expect(headers["X-Forwarded-Proto"] == ["https"])
        #expect(headers["X-Forwarded-Prefix"] == ["/om"])
    }

    @Test("downstream, hop-by-hop headers and the upstream's framing are dropped, the rest kept")
    func downstream() {
        let fields = ProxyHeaders.downstream(from: [
            "Content-Type": "text/event-stream", "Connection": "close, X-Hop", "X-Hop": "1", "Transfer-Encoding": "chunked",
            "Content-Length": "5", "Mcp-Session-Id": "s1",
        ])
        #expect(fields[.contentType] == "text/event-stream")
        #expect(fields[HTTPField.Name("Mcp-Session-Id")!] == "s1")
        for name in ["Connection", "X-Hop", "Transfer-Encoding", "Content-Length"] { #expect(fields[HTTPField.Name(name)!] == nil, "\(name)") }
    }
}
