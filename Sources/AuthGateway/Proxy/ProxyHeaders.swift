import HTTPTypes
import NIOHTTP1

/// Which headers cross the proxy, in each direction.
///
/// Towards the backend: never hop-by-hop headers (RFC 9110 §7.6.1, plus every name the `Connection` header lists),
/// never the client's credential (`Authorization`, the API key header) or cookies, never a client-sent identity
/// header (`X-Auth-*` or the configured names) or forwarding header; the gateway adds its own identity headers and
/// `X-Forwarded-*` instead. Towards the client: everything but hop-by-hop headers and framing, which the gateway's
/// own server sets.
struct ProxyHeaders: Sendable {
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade",
    ]
    /// Never forwarded upstream, whatever the request: the gateway sets these itself or they belong to the client.
    static let neverUpstream: Set<String> = [
        "host", "content-length", "authorization", "cookie", "forwarded", "x-forwarded-for", "x-forwarded-host",
        "x-forwarded-proto", "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-server", "x-real-ip",
        "x-forwarded-method", "x-forwarded-uri",
    ]

    /// Lower-cased names stripped from requests besides the fixed ones: the API key header and identity headers.
    let clientOnly: Set<String>

    init(gateway: GatewaySettings) {
        var names = Set(gateway.identityHeaders.all.map { $0.lowercased() })
        if let keyHeader = gateway.apiKeyHeader { names.insert(keyHeader.lowercased()) }
        clientOnly = names
    }

    /// The headers sent upstream: the client's own minus everything above, plus the gateway's.
    func upstream(
        from fields: HTTPFields, identity: [HTTPField], clientAddress: IPAddress?, publicHost: String, proto: String, prefix: String
    ) -> HTTPHeaders {
        let dropped = Self.connectionListed(in: fields)
        var headers = HTTPHeaders()
        for field in fields {
            let name = field.name.canonicalName
            if Self.hopByHop.contains(name) || Self.neverUpstream.contains(name) || clientOnly.contains(name) || dropped.contains(name) { continue }
            // Any X-Auth-* header, whatever the configured names: a backend may read the defaults.
            if name.hasPrefix("x-auth-") || name.hasPrefix("x_auth") || name.hasPrefix("x.auth") { continue }
            headers.add(name: field.name.rawName, value: field.value)
        }
        for field in identity { headers.add(name: field.name.rawName, value: field.value) }
        if let clientAddress { headers.add(name: "X-Forwarded-For", value: clientAddress.description) }
        headers.add(name: "X-Forwarded-Host", value: publicHost)
        headers.add(name: "X-Forwarded-Proto", value: proto)
        headers.add(name: "X-Forwarded-Prefix", value: prefix)
        return headers
    }

    /// The headers sent back to the client.
    static func downstream(from headers: HTTPHeaders) -> HTTPFields {
        var dropped = hopByHop
        for value in headers[canonicalForm: "connection"] { dropped.insert(value.lowercased().trimmingSpaces) }
        dropped.insert("content-length")  // the gateway's server frames the body itself
        var fields = HTTPFields()
        for (name, value) in headers where !dropped.contains(name.lowercased()) {
            guard let fieldName = HTTPField.Name(name) else { continue }
            fields.append(HTTPField(name: fieldName, value: value))
        }
        return fields
    }

    private static func connectionListed(in fields: HTTPFields) -> Set<String> {
        var names = Set<String>()
        for value in fields[values: .connection] {
            for token in value.split(separator: ",") { names.insert(String(token).lowercased().trimmingSpaces) }
        }
        return names
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
