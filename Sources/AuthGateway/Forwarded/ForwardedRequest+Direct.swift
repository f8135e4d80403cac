import HTTPTypes

extension ForwardedRequest {
    /// A request the gateway received itself, as the reverse proxy of a path-style route.
    ///
    /// Method, host and path come from the request line and `Host`, which the gateway sees exactly as it will act on
    /// them, so the `X-Forwarded-Method/Host/Uri` of a forwardAuth call are neither needed nor read. Only the client
    /// address (right-most `X-Forwarded-For`) and scheme (`X-Forwarded-Proto`) are taken from a trusted proxy in
    /// front (Traefik); from any other peer the peer itself is the client. The path passes the same checks as a
    /// forwarded one (dot segments, encoded separators and control characters are refused).
    public init(direct head: HTTPRequest, peer: IPAddress?, trustedProxies: [IPNetwork]) throws(Refusal) {
        let method = head.method.rawValue
        guard !method.isEmpty, method.utf8.allSatisfy({ (65...90).contains($0) }) else { throw .malformed("method", "not an upper-case method name") }
        // HTTPTypes carries the Host header as the authority (a repeated Host is refused by the HTTP parser).
        guard let rawHost = head.authority else { throw .missing("Host") }
        guard let host = Self.canonicalHost(rawHost) else { throw .malformed("Host", "not a host name") }
        guard let target = head.path else { throw .missing("request path") }
        let (rawPath, query) = try Self.splitURI(target)
        let (path, segments) = try Self.normalisedPath(rawPath)

        var client = peer
        var proto = "http"
        if trustedProxies.containsAddress(peer) {
            let forwardedFor = head.headerFields[values: Self.forHeader].joined(separator: ",")
            if !forwardedFor.isEmpty {
                let last = forwardedFor.split(separator: ",", omittingEmptySubsequences: false).last ?? ""
                guard let address = IPAddress(Self.trimmed(last)) else { throw .malformed("X-Forwarded-For", "not an IP address") }
                client = address
            }
            let protos = head.headerFields[values: Self.protoHeader]
            if protos.count > 1 { throw .repeated("X-Forwarded-Proto") }
            if let value = protos.first {
                guard let canonical = Self.canonicalProto(String(Self.trimmed(value[...]))) else { throw .malformed("X-Forwarded-Proto", "not http or https") }
                proto = canonical
            }
        }
        self.init(
            method: method, proto: proto, host: host, path: path, pathSegments: segments, query: query, clientAddress: client,
            headers: head.headerFields)
    }
}
