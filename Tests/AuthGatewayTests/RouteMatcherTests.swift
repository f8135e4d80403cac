import AuthGateway
import Testing

@Suite("Route matching")
struct RouteMatcherTests {
    static let loopback = [IPNetwork("127.0.0.1/32")!]

    func match(_ matcher: RouteMatcher, _ uri: String, method: String = "GET", host: String = "mcp.example.com") throws -> String? {
        let request = try ForwardedRequest(headers: forwardedHeaders(method: method, host: host, uri: uri), peer: IPAddress("127.0.0.1"), trustedProxies: Self.loopback)
        if case .matched(let matched) = matcher.match(request) { return matched.route.name }
        return nil
    }

    @Test("the first route in policy order wins, also when a capture route sits between literal ones")
    func firstMatchOrder() throws {
        let routes = """
              - { name: specific, match: { path: "/tools/special" }, accept: [api_key] }
              - { name: any-first, match: { path: "/{anything}/special" }, accept: [api_key] }
              - { name: tools, match: { path: "/tools/**" }, accept: [api_key] }
              - { name: catch-all, match: { path: "/**" }, accept: [api_key] }
            """
        let matcher = RouteMatcher(routes: try PolicyLoader.load(yaml: testPolicy(routes: routes)).policy.routes)
        #expect(try match(matcher, "/tools/special") == "specific")
        #expect(try match(matcher, "/other/special") == "any-first")
        #expect(try match(matcher, "/tools/x") == "tools")
        #expect(try match(matcher, "/nothing/here") == "catch-all")
        #expect(try match(matcher, "/") == "catch-all")
    }

    @Test("host and method narrow a match without changing the order")
    func hostAndMethod() throws {
        let routes = """
              - { name: post-only, match: { host: mcp.example.com, path: "/a/**", methods: [POST] }, accept: [api_key] }
              - { name: other-host, match: { host: other.example.com, path: "/a/**" }, accept: [api_key] }
              - { name: fallback, match: { path: "/a/**" }, accept: [api_key] }
            """
        let matcher = RouteMatcher(routes: try PolicyLoader.load(yaml: testPolicy(routes: routes)).policy.routes)
        #expect(try match(matcher, "/a/x", method: "POST") == "post-only")
        #expect(try match(matcher, "/a/x", method: "GET") == "fallback")
        #expect(try match(matcher, "/a/x", host: "other.example.com") == "other-host")
        #expect(try match(matcher, "/b/x") == nil)
    }

    @Test("the segment tree finds exactly the templates a linear scan would match", arguments: [
        "/", "/a", "/a/", "/a/b", "/a/b/c", "/x/b", "/a/x/c", "/a/b/c/d", "/q",
    ])
    func treeAgreesWithScan(_ uri: String) throws {
        let templates = ["/", "/**", "/a", "/a/**", "/a/b", "/{x}/b", "/a/{y}/c", "/{x}/{y}/**", "/a/b/c", "/{only}"]
        let routes = templates.enumerated().map { "  - { name: r\($0.offset), match: { path: \"\($0.element)\" }, accept: [api_key] }" }.joined(separator: "\n")
        let policy = try PolicyLoader.load(yaml: testPolicy(routes: routes)).policy
        let request = try ForwardedRequest(headers: forwardedHeaders(uri: uri), peer: IPAddress("127.0.0.1"), trustedProxies: Self.loopback)
        let scanned = policy.routes.enumerated().filter { $0.element.path.match(request.pathSegments[...]) != nil }.map { "r\($0.offset)" }
        #expect(try match(RouteMatcher(routes: policy.routes), uri) == scanned.first)
    }

    @Test("ten thousand routes still give the same first match as a scan in order")
    func manyRoutes() throws {
        var yaml = ""
        for index in 0..<10_000 { yaml += "  - { name: r\(index), match: { path: \"/svc\(index % 5000)/{id}/**\" }, accept: [api_key] }\n" }
        let matcher = RouteMatcher(routes: try PolicyLoader.load(yaml: testPolicy(routes: yaml)).policy.routes)
        #expect(try match(matcher, "/svc4999/7/x") == "r4999")
        #expect(try match(matcher, "/svc0/1") == "r0")
        #expect(try match(matcher, "/svc5000/1") == nil)
    }
}
