import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import TokenStore

/// Fetches Client ID Metadata Documents: a `client_id` that is an HTTPS URL names a JSON document describing the
/// client. The fetch is bounded (5 KiB, 5 s, no redirects) and never reaches loopback, private, link-local or other
/// non-public addresses unless the policy allows it: the host is resolved first, every address checked, and the
/// connection pinned to a checked address so DNS cannot answer differently the second time. Names are resolved off
/// Swift's cooperative pool with a timeout (`HostResolver`), a URL that failed is not fetched again for a minute,
/// only a few fetches run at once, and why a fetch failed goes to the log only: the requester, who need not be
/// authenticated, must not learn what an internal name resolves to.
struct ClientMetadataDocumentFetcher: Sendable {
    static let maximumDocumentSize = 5 * 1024
    static let timeout = TimeAmount.seconds(5)
    /// How long a fetched document describes its client before it is fetched again.
    static let freshness: TimeInterval = 3600

    let store: TokenStore
    let resolver: HostResolver
    let limits: MetadataFetchGuard
    let logger: Logger

    init(store: TokenStore, resolver: HostResolver = .shared, limits: MetadataFetchGuard = MetadataFetchGuard(), logger: Logger = Logger(label: "authgateway")) {
        self.store = store
        self.resolver = resolver
        self.limits = limits
        self.logger = logger
    }

    /// Why a metadata document cannot describe a client: the detail is for the log, never for the requester.
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// What the requester is told, whatever the cause (the cause is logged).
    enum Refusal: Error, CustomStringConvertible {
        /// The document could not be fetched or used, now or within the last minute.
        case unusable
        /// Too many fetches are running; nothing is remembered about the URL.
        case busy

        var description: String {
            switch self {
            case .unusable: "The application's metadata document cannot be used."
            case .busy: "Too many application metadata documents are being fetched. Try again in a moment."
            }
        }
    }

    static func isMetadataDocumentURL(_ clientID: String) -> Bool { clientID.hasPrefix("https://") }

    /// Whether `client(for:)` would go to the network for `clientID` (not a fresh stored client, no recent failure).
    func wouldFetch(_ clientID: String, now: Date = Date()) -> Bool {
        guard Self.isMetadataDocumentURL(clientID), !limits.recentlyFailed(clientID) else { return false }
        guard let known = try? store.client(id: clientID), known.source == .metadataDocument else { return true }
        return known.revokedAt == nil && now.timeIntervalSince(known.refreshedAt) >= Self.freshness
    }

    /// The client for `url`: from the store while fresh, otherwise fetched, validated and stored.
    func client(for url: String, allowPrivateHosts: Bool, now: Date = Date()) async throws(Refusal) -> OAuthClient {
        if let known = try? store.client(id: url), known.source == .metadataDocument,
            known.revokedAt != nil || now.timeIntervalSince(known.refreshedAt) < Self.freshness
        {
            return known
        }
        guard !limits.recentlyFailed(url) else { throw .unusable }
        guard limits.begin() else {
            logger.warning("client metadata document not fetched: too many fetches in flight", metadata: ["client_id": "\(url)"])
            throw .busy
        }
        defer { limits.end() }
        do {
            let document = try await fetch(url, allowPrivateHosts: allowPrivateHosts)
            let client = try Self.client(from: document, url: url, now: now)
            do {
                return try store.saveMetadataDocumentClient(client)
            } catch {
                throw Failure(description: "cannot store the client: \(error)")
            }
        } catch {
            limits.recordFailure(url)
            logger.notice("client metadata document refused", metadata: ["client_id": "\(url)", "reason": "\(error)"])
            throw .unusable
        }
    }

    private func fetch(_ url: String, allowPrivateHosts: Bool) async throws -> Data {
        guard let components = URLComponents(string: url), components.scheme == "https", let host = components.host, !host.isEmpty,
            components.user == nil, components.password == nil, components.fragment == nil,
            !components.path.isEmpty, components.path != "/",
            !components.path.split(separator: "/").contains(where: { $0 == "." || $0 == ".." })
        else { throw Failure(description: "client_id must be an https URL with a path, no credentials, fragment or dot segments") }
        let bareHost = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        let addresses: [IPAddress]
        do {
            addresses = try await resolver.resolve(bareHost)
        } catch {
            throw Failure(description: "\(host) cannot be resolved (\(error))")
        }
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
