/// Expands `${NAME}` and `${NAME:-default}` in policy values, so secrets and per-host URLs stay out of policy files.
enum EnvironmentSubstitution {
    enum Failure: Error, Equatable {
        case unset(String)
        case malformed(String)
    }

    static func expand(_ text: String, environment: [String: String]) throws(Failure) -> String {
        guard text.contains("${") else { return text }
        var result = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            result += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                throw .malformed("unterminated '${' in \"\(text)\"")
            }
            let expression = rest[start.upperBound..<end]
            let name: Substring
            let fallback: Substring?
            if let separator = expression.range(of: ":-") {
                name = expression[..<separator.lowerBound]
                fallback = expression[separator.upperBound...]
            } else {
                name = expression
                fallback = nil
            }
            guard !name.isEmpty, name.allSatisfy({ $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }) else {
                throw .malformed("'${\(expression)}' is not a variable reference: names are letters, digits and '_'")
            }
            if let value = environment[String(name)], !value.isEmpty {
                result += value
            } else if let fallback {
                result += fallback
            } else {
                throw .unset(String(name))
            }
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }
}
