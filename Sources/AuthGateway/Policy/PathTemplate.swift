/// A route path such as `/openmemory/{client_name}/sse/{user_id}` or `/ffmpeg/**`, matched segment by segment.
public struct PathTemplate: Sendable, CustomStringConvertible {
    /// One segment of a template.
    public enum Segment: Sendable, Equatable {
        case literal(String)
        case capture(String)
        /// `**`: any remaining segments, including none.
        case tail
    }

    public let segments: [Segment]
    public let description: String

    /// Parses a template; throws a message naming what is wrong.
    public init(_ text: String) throws(PathTemplateError) {
        guard text.hasPrefix("/") else { throw .init("path must start with '/'") }
        var segments: [Segment] = []
        var seen = Set<String>()
        let parts = text.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        for (index, part) in parts.enumerated() {
            if part.isEmpty {
                if index == parts.count - 1 && index > 0 { break }  // a trailing slash is allowed
                if parts.count == 1 { break }  // the root path "/"
                throw .init("path has an empty segment")
            }
            if part == "**" {
                guard index == parts.count - 1 else { throw .init("'**' is allowed only as the last segment") }
                segments.append(.tail)
            } else if part.hasPrefix("{") && part.hasSuffix("}") {
                let name = String(part.dropFirst().dropLast())
                guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                    throw .init("capture name '\(name)' must be letters, digits or '_'")
                }
                guard seen.insert(name).inserted else { throw .init("capture '\(name)' appears twice") }
                segments.append(.capture(name))
            } else if part.contains("{") || part.contains("}") || part.contains("*") || part.contains("%") || part == "." || part == ".." {
                throw .init("segment '\(part)' must be a literal, a whole '{capture}' or a final '**'")
            } else {
                segments.append(.literal(String(part)))
            }
        }
        self.segments = segments
        self.description = text
    }

    public var captureNames: [String] {
        segments.compactMap { if case .capture(let name) = $0 { name } else { nil } }
    }

    /// The literal segments before the first capture or tail, as a path (`/openmemory`).
    public var literalPrefix: String {
        var prefix = ""
        for segment in segments {
            guard case .literal(let value) = segment else { break }
            prefix += "/" + value
        }
        return prefix
    }

    /// Matches already-split, normalised, still percent-encoded path segments (`ForwardedRequest.pathSegments`);
    /// returns the raw capture values or nil. Literals are compared byte for byte, as Traefik does, never by
    /// Unicode equivalence. A single trailing empty segment (trailing slash) is ignored.
    public func match(_ pathSegments: ArraySlice<Substring>) -> [String: Substring]? {
        var path = pathSegments
        if path.count > 1, path.last?.isEmpty == true { path = path.dropLast() }
        var captures: [String: Substring] = [:]
        var index = path.startIndex
        for segment in segments {
            switch segment {
            case .tail:
                return captures
            case .literal(let value):
                guard index < path.endIndex, path[index].utf8.elementsEqual(value.utf8) else { return nil }
            case .capture(let name):
                guard index < path.endIndex, !path[index].isEmpty else { return nil }
                captures[name] = path[index]
            }
            index += 1
        }
        if index == path.endIndex { return captures }
        // "/" matches the root template only; an empty final segment was dropped above.
        if segments.isEmpty, path.count == 1, path.first?.isEmpty == true { return captures }
        return nil
    }
}

/// Why a path template was refused.
public struct PathTemplateError: Error, Sendable {
    public let message: String
    init(_ message: String) { self.message = message }
}
