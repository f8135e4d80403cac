import AsyncHTTPClient
import Foundation
import NIOCore
import TokenStore

#if canImport(Glibc)
import Glibc
#endif

/// Fetches Client ID Metadata Documents: a `client_id` that is an HTTPS URL names a JSON document describing the
/// client. The fetch is bounded (5 KiB, 5 s, no redirects) and never reaches loopback, private, link-local or other
/// non-public addresses unless the policy allows it: the host is resolved first, every address checked, and the
/// connection pinned to a checked address so DNS cannot answer differently the second time.
struct ClientMetadataDocumentFetcher: Sendable {
    static let maximumDocumentSize = 5 * 1024
    static let timeout = TimeAmount.seconds(5)
    /// How long a fetched document describes its client before it is fetched again.
    static let freshness: TimeInterval = 3600

    let store: TokenStore

    /// Why a metadata document cannot describe a client.
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func isMetadataDocumentURL(_ clientID: String) -> Bool { clientID.hasPrefix("https://") }

    /// The client for `url`: from the store while fresh, otherwise fetched, validated and stored.
    func client(for url: String, allowPrivateHosts: Bool, now: Date = Date()) async throws -> OAuthClient {
        if let known = try? store.client(id: url), known.source == .metadataDocument,
            known.revokedAt != nil || now.timeIntervalSince(known.refreshedAt) < Self.freshness
        {
            return known
        }
        let document = try await fetch(url, allowPrivateHosts: allowPrivateHosts)
        let client = try Self.client(from: document, url: url, now: now)
        do {
            return try store.saveMetadataDocumentClient(client)
        } catch {
            throw Failure(description: "cannot store the client: \(error)")
        }
    }

    private func fetch(_ url: String, allowPrivateHosts: Bool) async throws -> Data {
        guard let components = URLComponents(string: url), components.scheme == "https", let host = components.host, !host.isEmpty,
            components.user == nil, components.password == nil, components.fragment == nil,
            !components.path.isEmpty, components.path != "/",
            !components.path.split(separator: "/").contains(where: { $0 == "." || $0 == ".." })
        else { throw Failure(description: "client_id must be an https URL with a path, no credentials, fragment or dot segments") }
        let bareHost = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        let addresses = try Self.resolve(bareHost)
        guard let first = addresses.first else { throw Failure(description: "\(host) does not resolve") }
        if !allowPrivateHosts, let refused = addresses.first(where: { !Self.isPublic($0) }) {
            throw Failure(description: "\(host) resolves to \(refused), which is not a public address")
        }
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(3), read: .seconds(3)))
        configuration.dnsOverride = [bareHost: first.description]
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        defer { client.shutdown { _ in } }
        do {
            var request = HTTPClientRequest(url: url)
            request.headers.add(name: "Accept", value: "application/json")
            let response = try await client.execute(request, timeout: Self.timeout)
            guard response.status == .ok else { throw Failure(description: "the document answered HTTP \(response.status.code)") }
            return Data(buffer: try await response.body.collect(upTo: Self.maximumDocumentSize))
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure(description: "the document cannot be fetched (\(type(of: error)))")
        }
    }

    /// Validates a fetched document: its `client_id` must be the URL it came from, its redirect URIs acceptable.
    static func client(from document: Data, url: String, now: Date) throws -> OAuthClient {
        guard let object = try? JSONSerialization.jsonObject(with: document) as? [String: Any] else {
            throw Failure(description: "the document is not a JSON object")
        }
        guard object["client_id"] as? String == url else { throw Failure(description: "the document's client_id is not its own URL") }
        guard let redirects = object["redirect_uris"] as? [String], !redirects.isEmpty else {
            throw Failure(description: "the document lists no redirect_uris")
        }
        if let problem = redirects.lazy.compactMap(RedirectURIRules.problem).first { throw Failure(description: problem) }
        let method = object["token_endpoint_auth_method"] as? String ?? "none"
        guard method == "none" else { throw Failure(description: "token_endpoint_auth_method '\(method)' is not supported for metadata documents") }
        let grants = object["grant_types"] as? [String] ?? ["authorization_code"]
        guard grants.allSatisfy(["authorization_code", "refresh_token"].contains) else {
            throw Failure(description: "grant_types may contain authorization_code and refresh_token only")
        }
        let name = (object["client_name"] as? String).map { String($0.prefix(200)) } ?? url
        return OAuthClient(
            id: url, secretDigest: nil, name: name, redirectURIs: redirects, grantTypes: grants, authMethod: "none",
            scope: object["scope"] as? String, source: .metadataDocument, createdAt: now, refreshedAt: now, revokedAt: nil)
    }

    static func resolve(_ host: String) throws -> [IPAddress] {
        if let literal = IPAddress(host) { return [literal] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let result else { throw Failure(description: "\(host) does not resolve") }
        defer { freeaddrinfo(result) }
        var addresses: [IPAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = result
        while let entry = cursor {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(entry.pointee.ai_addr, entry.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0,
                let address = IPAddress(String(cString: buffer))
            {
                if !addresses.contains(address) { addresses.append(address) }
            }
            cursor = entry.pointee.ai_next
        }
        return addresses
    }

    /// Networks a metadata fetch must never reach: this host, private networks, link-local (cloud metadata
    /// services), carrier-grade NAT, multicast, reserved, and IPv6 forms that embed an IPv4 address (mapped,
    /// compatible, NAT64 and local-use NAT64 (RFC 8215), 6to4, Teredo) and could smuggle a private one.
    static let nonPublicNetworks: [IPNetwork] = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
        "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/3", "::/96", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/32", "2001:db8::/32",
        "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8",
    ].compactMap { IPNetwork($0) }

    static func isPublic(_ address: IPAddress) -> Bool {
        !nonPublicNetworks.contains { $0.contains(address) }
    }
}
