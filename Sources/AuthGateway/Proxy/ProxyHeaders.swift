import Foundation
import HTTPTypes
import NIOHTTP1

/// Which headers cross the proxy, in each direction.
///
/// Towards the backend: never hop-by-hop headers (RFC 9110 §7.6.1, plus every name the `Connection` header lists),
/// never the client's credential (`Authorization`, the API key header) or cookies, never a client-sent identity
/// header (`X-Auth-*` or the configured names) or forwarding header; the gateway adds its own identity headers and
/// `X-Forwarded-*` instead, never a name with `_` or `.` nor a path or method override header. Towards the client:
/// everything but hop-by-hop headers, framing (the gateway's own server sets it) and cookies named like the
/// gateway's own.
struct ProxyHeaders: Sendable {
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade",
    ]
    /// Never forwarded upstream, whatever the request: the gateway sets these itself or they belong to the client.
    static let neverUpstream: Set<String> = [
        "host", "content-length", "authorization", "cookie", "forwarded", "x-forwarded-for", "x-forwarded-host",
        "x-forwarded-proto", "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-server", "x-real-ip",
        "x-forwarded-method", "x-forwarded-uri", "x-client-ip", "true-client-ip",
    ]

    /// Headers some backends take instead of the request line's path or method: the gateway decided on those.
    static let overrides: Set<String> = [
        "x-original-url", "x-rewrite-url", "x-original-uri", "x-http-method-override", "x-http-method", "x-method-override",
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
            // Any X-Forwarded-* header too (`-Tls-Client-Cert`, `-Ssl`, `-Scheme`…): a backend may trust what a proxy
            // sets under those names, and here only the gateway sets them.
            if name.hasPrefix("x-forwarded-") { continue }
            // WSGI and CGI backends read `Mcp_Session_Id` and `X_Auth_Subject` as the protected names (finding 14),
            // PHP reads `X.Forwarded.Prefix` or `Mcp.Session.Id` the same way (attack table T2/T11), and some
            // frameworks route or dispatch on override headers instead of the request line.
            if name.utf8.contains(where: { $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }) || Self.overrides.contains(name) { continue }
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
            if fieldName == .setCookie, setsGatewayCookie(value) { continue }
            fields.append(HTTPField(name: fieldName, value: value))
        }
        return fields
    }

    /// Whether a `Set-Cookie` value sets one of the gateway's own cookies (`authgateway_csrf`, also with the
    /// `__Host-` or `__Secure-` prefix, in any case): a backend behind the proxy shares the gateway's origin and
    /// must not plant them (finding G). A value without `=` counts by its whole first part, as browsers read it.
    static func setsGatewayCookie(_ value: String) -> Bool {
        let pair = value.prefix { $0 != ";" }
        var name = (pair.firstIndex(of: "=").map { pair[..<$0] } ?? pair).trimmingCharacters(in: .whitespaces).lowercased()[...]
        for prefix in ["__host-", "__secure-"] where name.hasPrefix(prefix) { name = name.dropFirst(prefix.count) }
        return name.hasPrefix(gatewayCookiePrefix)
    }

    /// Every cookie the gateway sets starts with this (after a `__Host-` or `__Secure-` prefix).
    static let gatewayCookiePrefix = "authgateway"

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
