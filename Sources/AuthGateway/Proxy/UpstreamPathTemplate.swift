/// The upstream path of a path-style backend, such as `/mcp/{client_name}/sse/{subject}`, filled from the
/// authenticated principal.
public struct UpstreamPathTemplate: Sendable, CustomStringConvertible {
    /// A principal field a template may name.
    public enum Variable: String, Sendable, CaseIterable {
        case subject
        case client
        /// OpenMemory's name for the client; the same value as `client`.
        case clientName = "client_name"

        func value(in principal: Principal) -> String {
            switch self {
            case .subject: principal.subject
            case .client, .clientName: principal.client
            }
        }
    }

    /// One segment of the template.
    public enum Segment: Sendable, Equatable {
        case literal(String)
        case variable(Variable)
    }

    public let segments: [Segment]
    /// Whether the template ends in `/`, which the rendered path keeps.
    public let trailingSlash: Bool
    public let description: String

    /// Parses a template; the error says which segment or variable is wrong.
    public init(_ text: String) throws(PathTemplateError) {
        guard text.hasPrefix("/") else { throw .init("path must start with '/'") }
        var parts = text.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        var trailingSlash = false
        if parts.count > 1, parts.last?.isEmpty == true {
            parts.removeLast()
            trailingSlash = true
        }
        var segments: [Segment] = []
        for part in parts {
            if part.isEmpty {
                if parts.count == 1 { break }  // the root path "/"
                throw .init("path has an empty segment")
            }
            if part.hasPrefix("{") && part.hasSuffix("}") {
                let name = String(part.dropFirst().dropLast())
                guard let variable = Variable(rawValue: name) else {
                    throw .init("unknown variable '{\(name)}' (expected one of: \(Variable.allCases.map { "{\($0.rawValue)}" }.joined(separator: ", ")))")
                }
                segments.append(.variable(variable))
            } else if part.contains("{") || part.contains("}") || part == "." || part == ".." || part.contains("%")
                || !part.utf8.allSatisfy(IdentityPathValue.isPathCharacter)
            {
                throw .init("segment '\(part)' must be a plain literal or a whole '{variable}'")
            } else {
                segments.append(.literal(String(part)))
            }
        }
        guard segments.contains(where: { if case .variable = $0 { true } else { false } }) else {
            throw .init("path names no identity variable ({subject}, {client} or {client_name}), so every caller would share one upstream path")
        }
        self.segments = segments
        self.trailingSlash = trailingSlash
        self.description = text
    }

    /// Why a principal's identity could not be written into the path.
    public struct RenderError: Error, Sendable, Equatable, CustomStringConvertible {
        public let variable: String
        public let problem: IdentityPathValue.Problem
        public var description: String { "identity value for {\(variable)} \(problem.rawValue)" }
    }

    /// The upstream path for `principal`, checked before (each value) and after (the whole path) rewriting.
    public func render(for principal: Principal) throws(RenderError) -> String {
        var path = ""
        for segment in segments {
            switch segment {
            case .literal(let value):
                path += "/" + value
            case .variable(let variable):
                let value = variable.value(in: principal)
                if let problem = IdentityPathValue.problem(with: value) { throw RenderError(variable: variable.rawValue, problem: problem) }
                path += "/" + IdentityPathValue.encodedSegment(value)
            }
        }
        if trailingSlash { path += "/" }
        // After rewriting: the path must split into exactly the template's segments, none of them a dot segment,
        // so no value can have moved the request elsewhere whatever the encoding did.
        let rendered = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        let expected = segments.count + (trailingSlash ? 1 : 0)
        guard rendered.count == expected, !rendered.dropLast(trailingSlash ? 1 : 0).contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
            throw RenderError(variable: "path", problem: .slash)
        }
        return path
    }
}
