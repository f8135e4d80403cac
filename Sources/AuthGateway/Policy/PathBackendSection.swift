import Foundation
import Yams

/// The `backend:` keys of a `style: path` route: the gateway proxies to `url`, writing identity into `path`.
enum PathBackendSection {
    static let keys: Set = [
        "path", "max_streams", "max_streams_per_principal", "idle_timeout", "health_path", "health_interval", "failure_threshold", "cooldown",
    ]

    static func read(_ entries: [String: Node], node: Node, what: String, reader: PolicyReader) -> PathStyleBackend? {
        let errorsBefore = reader.errors.count
        guard let urlNode = entries["url"] else {
            reader.fail(node, "\(what).backend: style path needs 'url', the backend the gateway proxies to")
            return nil
        }
        guard let url = reader.url(urlNode, "\(what).backend.url"), let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
            let host = components.host
        else { return nil }
        let origin = "\(scheme)://\(host.contains(":") ? "[\(host)]" : host)" + (components.port.map { ":\($0)" } ?? "")
        let basePath = components.percentEncodedPath == "/" ? "" : components.percentEncodedPath

        var template: UpstreamPathTemplate?
        if let pathNode = entries["path"], let text = reader.nonEmptyString(pathNode, "\(what).backend.path") {
            do { template = try UpstreamPathTemplate(text) } catch { reader.fail(pathNode, "\(what).backend.path: \(error.message)") }
        } else if entries["path"] == nil {
            reader.fail(node, "\(what).backend: style path needs 'path', the upstream path template (e.g. /mcp/{client_name}/sse/{subject})")
        }

        let maxStreams = entries["max_streams"].flatMap { positiveInteger($0, "\(what).backend.max_streams", reader: reader) } ?? PathStyleBackend.defaultMaxStreams
        var maxPerPrincipal = min(maxStreams, PathStyleBackend.defaultMaxStreamsPerPrincipal)
        if let node = entries["max_streams_per_principal"], let value = positiveInteger(node, "\(what).backend.max_streams_per_principal", reader: reader) {
            if value > maxStreams {
                reader.fail(node, "\(what).backend.max_streams_per_principal (\(value)) must not exceed max_streams (\(maxStreams))")
            }
            maxPerPrincipal = value
        }
        let failureThreshold = entries["failure_threshold"].flatMap { positiveInteger($0, "\(what).backend.failure_threshold", reader: reader) } ?? 3
        let idleTimeout = entries["idle_timeout"].flatMap { duration($0, "\(what).backend.idle_timeout", minimum: 1, reader: reader) } ?? PathStyleBackend.defaultIdleTimeout
        let healthInterval = entries["health_interval"].flatMap { duration($0, "\(what).backend.health_interval", minimum: 0.1, reader: reader) } ?? PathStyleBackend.defaultHealthInterval
        let cooldown = entries["cooldown"].flatMap { duration($0, "\(what).backend.cooldown", minimum: 0.1, reader: reader) } ?? .seconds(30)
        var healthPath = "/"
        if let healthNode = entries["health_path"], let value = reader.nonEmptyString(healthNode, "\(what).backend.health_path") {
            if !value.hasPrefix("/") || value.contains("..") || value.contains("?") || value.contains("#") || value.contains(" ") {
                reader.fail(healthNode, "\(what).backend.health_path must be a plain upstream path such as /healthz")
            }
            healthPath = value
        }
        guard reader.errors.count == errorsBefore, let template else { return nil }
        return PathStyleBackend(
            upstream: origin + basePath, origin: origin, basePath: basePath, template: template, maxStreams: maxStreams, maxStreamsPerPrincipal: maxPerPrincipal,
            idleTimeout: idleTimeout,
            healthPath: healthPath, breaker: CircuitBreaker.Settings(failureThreshold: failureThreshold, cooldown: cooldown),
            healthInterval: healthInterval)
    }

    /// The route-level rules of a path-style route, checked once its match and accept lists are read.
    static func checkRoute(path: PathTemplate?, accept: [CredentialKind], stripPrefix: String?, entries: [String: Node], what: String, reader: PolicyReader) {
        if let path {
            let captures = !path.captureNames.isEmpty
            if captures || path.segments.last != .tail || path.literalPrefix.isEmpty {
                reader.fail(
                    entries["match"],
                    "\(what): a style path route needs match.path to be a literal prefix ending in /** (e.g. /openmemory/sse/**): the prefix is the client's URL and the backend's message URLs are announced below it; identity comes from the credential, not from path captures")
            }
        }
        if accept.contains(.pathContext) {
            reader.fail(entries["accept"], "\(what): a style path route cannot accept path_context: the identity written into the upstream path must come from a credential")
        }
        if stripPrefix != nil {
            reader.fail(entries["backend"], "\(what).backend.strip_prefix does not apply to style path: the gateway builds the upstream path itself")
        }
    }

    private static func positiveInteger(_ node: Node, _ what: String, reader: PolicyReader) -> Int? {
        guard let text = reader.string(node, what) else { return nil }
        guard let value = Int(text.trimmingCharacters(in: .whitespaces)), value > 0, value <= 100_000 else {
            reader.fail(node, "\(what) must be a whole number from 1 to 100000, not '\(text)'")
            return nil
        }
        return value
    }

    private static func duration(_ node: Node, _ what: String, minimum: TimeInterval, reader: PolicyReader) -> Duration? {
        guard let seconds = reader.duration(node, what) else { return nil }
        guard seconds >= minimum, seconds <= 86400 else {
            reader.fail(node, "\(what) must be between \(minimum)s and 24h")
            return nil
        }
        return .milliseconds(Int64(seconds * 1000))
    }
}
