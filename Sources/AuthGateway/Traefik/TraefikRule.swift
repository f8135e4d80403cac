/// Translates a route's match (host, methods, path template) into a Traefik v3 router rule.
enum TraefikRule {
    static func rule(for route: RoutePolicy) -> String {
        var parts: [String] = []
        if let host = route.host { parts.append("Host(`\(host)`)") }
        parts.append(pathMatcher(route.path))
        if let methods = route.methods?.sorted(), !methods.isEmpty {
            let matchers = methods.map { "Method(`\($0)`)" }
            parts.append(matchers.count == 1 ? matchers[0] : "(" + matchers.joined(separator: " || ") + ")")
        }
        return parts.joined(separator: " && ")
    }

    /// `Path` for literal templates, `PathPrefix` for a literal prefix with a tail, `PathRegexp` when there are
    /// captures. Prefixes end in `/` (plus an exact match of the bare prefix) so `/ffmpeg` never matches `/ffmpegx`.
    static func pathMatcher(_ template: PathTemplate) -> String {
        let hasCapture = template.segments.contains { if case .capture = $0 { true } else { false } }
        let hasTail = template.segments.last == .tail
        let prefix = template.literalPrefix
        if !hasCapture && !hasTail {
            return prefix.isEmpty ? "Path(`/`)" : "(Path(`\(prefix)`) || Path(`\(prefix)/`))"
        }
        if !hasCapture {
            return prefix.isEmpty ? "PathPrefix(`/`)" : "(Path(`\(prefix)`) || PathPrefix(`\(prefix)/`))"
        }
        var pattern = "^"
        for segment in template.segments {
            switch segment {
            case .literal(let value): pattern += "/" + quoteMeta(value)
            case .capture: pattern += "/[^/]+"
            case .tail: pattern += "(/.*)?"
            }
        }
        if !hasTail { pattern += "/?" }
        return "PathRegexp(`\(pattern)$`)"
    }

    /// Escapes Go regexp metacharacters, as Go's `regexp.QuoteMeta` does.
    static func quoteMeta(_ text: String) -> String {
        var quoted = ""
        for character in text {
            if "\\.+*?()|[]{}^$".contains(character) { quoted.append("\\") }
            quoted.append(character)
        }
        return quoted
    }
}
