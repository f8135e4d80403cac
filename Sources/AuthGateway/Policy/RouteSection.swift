import Foundation
import Yams

/// The `routes:` section: ordered routes, first match wins.
enum RouteSection {
    struct Context {
        let gateway: GatewaySettings
        let issuers: [IssuerPolicy]
        let environment: [String: String]
    }

    struct Read {
        let policy: RoutePolicy
        let node: Node
        let warnings: [String]
    }

    static let methods: Set = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"]

    static func read(_ node: Node, reader: PolicyReader, context: Context) -> [Read] {
        guard let sequence = node.sequence else {
            reader.fail(node, "routes must be a list of routes")
            return []
        }
        return sequence.compactMap { readRoute($0, reader: reader, context: context) }
    }

    private static func readRoute(_ node: Node, reader: PolicyReader, context: Context) -> Read? {
        let allowed: Set = ["name", "match", "resource", "accept", "issuers", "require", "path_context", "backend"]
        let errorsBefore = reader.errors.count
        guard let entries = reader.mapping(node, "a route", allowed: allowed) else { return nil }
        guard let nameNode = entries["name"], let name = reader.nonEmptyString(nameNode, "route name") else {
            if entries["name"] == nil { reader.fail(node, "a route needs a 'name'") }
            return nil
        }
        let what = "route '\(name)'"
        if !IssuerSection.isValidName(name) { reader.fail(nameNode, "\(what): name must be letters, digits, '-', '_' or '.'") }

        // match
        var host: String?
        var path: PathTemplate?
        var methods: Set<String>?
        if let matchNode = entries["match"], let match = reader.mapping(matchNode, "\(what).match", allowed: ["host", "path", "methods"]) {
            if let hostNode = match["host"], let value = reader.nonEmptyString(hostNode, "\(what).match.host") {
                host = ForwardedRequest.canonicalHost(value)
                if host == nil { reader.fail(hostNode, "\(what).match.host: '\(value)' is not a host name") }
            }
            if let pathNode = match["path"], let value = reader.nonEmptyString(pathNode, "\(what).match.path") {
                do { path = try PathTemplate(value) } catch { reader.fail(pathNode, "\(what).match.path: \(error.message)") }
            } else if match["path"] == nil {
                reader.fail(matchNode, "\(what).match.path is required")
            }
            if let methodNode = match["methods"], let names = reader.strings(methodNode, "\(what).match.methods") {
                let upper = Set(names.map { $0.uppercased() })
                for unknown in upper.subtracting(Self.methods).sorted() { reader.fail(methodNode, "\(what).match.methods: unknown method '\(unknown)'") }
                methods = upper
            }
        } else if entries["match"] == nil {
            reader.fail(node, "\(what) needs 'match' with at least a path")
        }

        // resource
        var resource: String?
        if let resourceNode = entries["resource"] {
            resource = reader.url(resourceNode, "\(what).resource")
        } else if let path {
            // Match paths are whole request paths, so the default resource hangs off the origin, not public_url's path.
            resource = context.gateway.origin + path.literalPrefix
        }

        // accept
        var accept: [CredentialKind] = []
        if let acceptNode = entries["accept"], let names = reader.strings(acceptNode, "\(what).accept") {
            for name in names {
                guard let kind = CredentialKind(rawValue: name) else {
                    reader.fail(acceptNode, "\(what).accept: unknown credential kind '\(name)' (expected api_key, jwt or path_context)")
                    continue
                }
                if accept.contains(kind) { reader.fail(acceptNode, "\(what).accept lists '\(name)' twice") }
                accept.append(kind)
            }
            if names.isEmpty { reader.fail(acceptNode, "\(what).accept must list at least one credential kind") }
        } else if entries["accept"] == nil {
            reader.fail(node, "\(what).accept is required (api_key, jwt, path_context)")
        }

        // issuers
        var issuers: [String] = []
        if let issuerNode = entries["issuers"], let names = reader.strings(issuerNode, "\(what).issuers") {
            for name in names where !context.issuers.contains(where: { $0.name == name }) {
                reader.fail(issuerNode, "\(what).issuers: no issuer named '\(name)' in the issuers section")
            }
            if !accept.contains(.jwt) { reader.fail(issuerNode, "\(what).issuers is set but the route does not accept jwt") }
            issuers = names
        } else if accept.contains(.jwt) {
            if context.issuers.isEmpty { reader.fail(entries["accept"], "\(what) accepts jwt but the policy defines no issuers") }
            issuers = context.issuers.map(\.name)
        }

        let captures = Set(path?.captureNames ?? [])
        let requirements = entries["require"].flatMap { readRequirements($0, what: what, captures: captures, reader: reader) } ?? Requirements()
        var pathContext: PathContextRule?
        if let contextNode = entries["path_context"] {
            pathContext = readPathContext(contextNode, what: what, captures: captures, reader: reader)
            if !accept.contains(.pathContext) { reader.fail(contextNode, "\(what).path_context is set but accept does not list path_context") }
        } else if accept.contains(.pathContext) {
            reader.fail(entries["accept"], "\(what) accepts path_context: add 'path_context' with the trusted source networks and the subject capture")
        }

        var warnings: [String] = []
        let backend = entries["backend"].flatMap { readBackend($0, what: what, context: context, reader: reader, warnings: &warnings) }
            ?? Backend(style: .headers, url: nil, stripPrefix: nil)

        if case .path = backend.style {
            PathBackendSection.checkRoute(path: path, accept: accept, stripPrefix: backend.stripPrefix, entries: entries, what: what, reader: reader)
        } else if let strip = backend.stripPrefix, let path, path.literalPrefix != strip, !path.literalPrefix.hasPrefix(strip + "/") {
            reader.fail(entries["backend"], "\(what).backend.strip_prefix '\(strip)' is not a prefix of the route path \(path)")
        }
        guard reader.errors.count == errorsBefore, let path, let resource else { return nil }
        let policy = RoutePolicy(
            name: name, host: host, path: path, methods: methods, resource: resource, accept: accept, issuers: issuers,
            requirements: requirements, pathContext: pathContext, backend: backend,
            location: "\(reader.file):\(node.mark?.line ?? 1)")
        return Read(policy: policy, node: node, warnings: warnings)
    }

    private static func readRequirements(_ node: Node, what: String, captures: Set<String>, reader: PolicyReader) -> Requirements? {
        guard let entries = reader.mapping(node, "\(what).require", allowed: ["scopes", "subjects", "groups", "networks", "bind"]) else { return nil }
        var requirements = Requirements()
        if let n = entries["scopes"] {
            requirements.scopes = reader.strings(n, "\(what).require.scopes") ?? []
            for scope in requirements.scopes where scope.contains(" ") || scope.contains("\"") || scope.contains("\\") {
                reader.fail(n, "\(what).require.scopes: '\(scope)' must not contain spaces, quotes or backslashes")
            }
        }
        if let n = entries["subjects"] { requirements.subjects = reader.strings(n, "\(what).require.subjects") ?? [] }
        if let n = entries["groups"] { requirements.groups = reader.strings(n, "\(what).require.groups") ?? [] }
        if let n = entries["networks"] { requirements.networks = reader.networks(n, "\(what).require.networks") ?? [] }
        if let bindNode = entries["bind"], let pairs = reader.namedEntries(bindNode, "\(what).require.bind") {
            for (capture, key, value) in pairs {
                guard captures.contains(capture) else {
                    reader.fail(key, "\(what).require.bind: the path has no capture '{\(capture)}'")
                    continue
                }
                guard let fieldName = reader.string(value, "\(what).require.bind.\(capture)"), let field = PrincipalField(rawValue: fieldName) else {
                    reader.fail(value, "\(what).require.bind.\(capture) must be one of: \(PrincipalField.allCases.map(\.rawValue).joined(separator: ", "))")
                    continue
                }
                requirements.bindings.append(CaptureBinding(capture: capture, field: field))
            }
        }
        return requirements
    }

    private static func readPathContext(_ node: Node, what: String, captures: Set<String>, reader: PolicyReader) -> PathContextRule? {
        guard let entries = reader.mapping(node, "\(what).path_context", allowed: ["networks", "subject", "client"]) else { return nil }
        guard let networksNode = entries["networks"], let networks = reader.networks(networksNode, "\(what).path_context.networks") else {
            if entries["networks"] == nil { reader.fail(node, "\(what).path_context.networks is required: path identity alone is trusted only from listed networks") }
            return nil
        }
        if networks.isEmpty { reader.fail(networksNode, "\(what).path_context.networks must not be empty") }
        guard let subjectNode = entries["subject"], let subject = reader.nonEmptyString(subjectNode, "\(what).path_context.subject") else {
            if entries["subject"] == nil { reader.fail(node, "\(what).path_context.subject is required (the capture naming the user)") }
            return nil
        }
        if !captures.contains(subject) { reader.fail(subjectNode, "\(what).path_context.subject: the path has no capture '{\(subject)}'") }
        var client: String?
        if let clientNode = entries["client"], let value = reader.nonEmptyString(clientNode, "\(what).path_context.client") {
            if !captures.contains(value) { reader.fail(clientNode, "\(what).path_context.client: the path has no capture '{\(value)}'") }
            client = value
        }
        return PathContextRule(networks: networks, subjectCapture: subject, clientCapture: client)
    }

    private static func readBackend(
        _ node: Node, what: String, context: Context, reader: PolicyReader, warnings: inout [String]
    ) -> Backend? {
        let allowed = Set(["style", "url", "strip_prefix", "header", "prefix", "value_env", "value_file"]).union(PathBackendSection.keys)
        guard let entries = reader.mapping(node, "\(what).backend", allowed: allowed) else { return nil }
        let styleName = entries["style"].flatMap { reader.nonEmptyString($0, "\(what).backend.style") } ?? "headers"
        if styleName != "path" {
            for key in PathBackendSection.keys.sorted() where entries[key] != nil {
                reader.fail(entries[key], "\(what).backend.\(key) applies only to style: path")
            }
        }
        let url = entries["url"].flatMap { reader.url($0, "\(what).backend.url") }
        var stripPrefix: String?
        if let stripNode = entries["strip_prefix"], let value = reader.nonEmptyString(stripNode, "\(what).backend.strip_prefix") {
            if !value.hasPrefix("/") || value.hasSuffix("/") || value.contains("//") || value.contains("{") || value.contains("*") {
                reader.fail(stripNode, "\(what).backend.strip_prefix must be a literal path such as /ffmpeg, without a trailing slash")
            }
            stripPrefix = value
        }
        switch styleName {
        case "headers":
            for key in ["header", "prefix", "value_env", "value_file"] where entries[key] != nil {
                reader.fail(entries[key], "\(what).backend.\(key) applies only to style: credential")
            }
            return Backend(style: .headers, url: url, stripPrefix: stripPrefix)
        case "credential":
            let header = entries["header"].flatMap { reader.nonEmptyString($0, "\(what).backend.header") } ?? "Authorization"
            if !PolicyReader.isSafeHeaderName(header) { reader.fail(entries["header"], "\(what).backend.header: '\(header)' must be letters, digits and '-'") }
            if context.gateway.identityHeaders.all.contains(where: { $0.lowercased() == header.lowercased() }) {
                reader.fail(entries["header"], "\(what).backend.header: '\(header)' is an identity header")
            }
            let prefix = entries["prefix"].flatMap { reader.string($0, "\(what).backend.prefix") } ?? ""
            var credential = BackendCredential(header: header, prefix: prefix, origin: "", value: nil)
            switch (entries["value_env"], entries["value_file"]) {
            case (let envNode?, nil):
                guard let name = reader.nonEmptyString(envNode, "\(what).backend.value_env") else { return nil }
                credential.origin = "environment variable \(name)"
                credential.value = context.environment[name].flatMap { $0.isEmpty ? nil : $0 }
            case (nil, let fileNode?):
                guard let file = reader.nonEmptyString(fileNode, "\(what).backend.value_file") else { return nil }
                credential.origin = "file \(file)"
                credential.value = (try? String(contentsOfFile: file, encoding: .utf8))
                    .map { $0.trimmingCharacters(in: .newlines) }.flatMap { $0.isEmpty ? nil : $0 }
            default:
                reader.fail(node, "\(what).backend: style credential needs exactly one of value_env or value_file (the secret never goes in the policy)")
                return nil
            }
            if credential.value == nil {
                warnings.append("\(what): backend secret (\(credential.origin)) is not set; the route answers 503 until it is")
            } else if credential.value!.contains(where: { $0.isNewline || $0 == "\0" }) {
                reader.fail(node, "\(what).backend: the secret from \(credential.origin) contains a line break")
            }
            return Backend(style: .credential(credential), url: url, stripPrefix: stripPrefix)
        case "path":
            for key in ["header", "prefix", "value_env", "value_file"] where entries[key] != nil {
                reader.fail(entries[key], "\(what).backend.\(key) applies only to style: credential")
            }
            guard let backend = PathBackendSection.read(entries, node: node, what: what, reader: reader) else { return nil }
            return Backend(style: .path(backend), url: url, stripPrefix: stripPrefix)
        default:
            reader.fail(entries["style"], "\(what).backend.style must be headers, credential or path, not '\(styleName)'")
            return nil
        }
    }
}
