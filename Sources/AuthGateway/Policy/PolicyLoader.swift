import Foundation
import Yams

/// A policy that loaded, with the warnings an operator should see (e.g. a backend secret that is not set).
public struct LoadedPolicy: Sendable {
    public let policy: Policy
    public let warnings: [String]
    /// The files read, in the order their routes were taken.
    public let files: [String]
}

/// Loads a policy from one YAML file or from every `*.yaml`/`*.yml` file of a directory (in name order).
public enum PolicyLoader {
    public static func load(
        path: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(PolicyLoadError) -> LoadedPolicy {
        let files = try policyFiles(at: path)
        var sections: [FileSections] = []
        var errors: [PolicyError] = []
        for file in files {
            do {
                let text = try String(contentsOfFile: file, encoding: .utf8)
                let (section, fileErrors) = parseSections(yaml: text, file: file, environment: environment)
                errors += fileErrors
                if let section { sections.append(section) }
            } catch {
                errors.append(PolicyError(file: file, line: 1, message: "cannot read file: \(error.localizedDescription)"))
            }
        }
        // A file that could not be read or parsed would make the rest look incomplete ("missing 'gateway'
        // section"): report only its own errors until it is fixed.
        guard errors.isEmpty else { throw PolicyLoadError(errors: errors) }
        let builder = PolicyBuilder(sections: sections, environment: environment)
        let result = builder.build()
        errors += result.errors
        guard errors.isEmpty, let policy = result.policy else {
            throw PolicyLoadError(errors: errors.isEmpty ? [PolicyError(file: path, line: 1, message: "policy is incomplete")] : errors)
        }
        return LoadedPolicy(policy: policy, warnings: result.warnings, files: files)
    }

    /// Loads a policy from YAML text, as if it were the file `file`.
    public static func load(
        yaml: String, file: String = "policy.yaml", environment: [String: String] = [:]
    ) throws(PolicyLoadError) -> LoadedPolicy {
        let (section, errors) = parseSections(yaml: yaml, file: file, environment: environment)
        guard errors.isEmpty, let section else { throw PolicyLoadError(errors: errors) }
        let result = PolicyBuilder(sections: [section], environment: environment).build()
        guard result.errors.isEmpty, let policy = result.policy else { throw PolicyLoadError(errors: result.errors) }
        return LoadedPolicy(policy: policy, warnings: result.warnings, files: [file])
    }

    static func policyFiles(at path: String) throws(PolicyLoadError) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw PolicyLoadError(errors: [PolicyError(file: path, line: 1, message: "no such file or directory")])
        }
        guard isDirectory.boolValue else { return [path] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        let files = names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
            .map { (path as NSString).appendingPathComponent($0) }
        guard !files.isEmpty else {
            throw PolicyLoadError(errors: [PolicyError(file: path, line: 1, message: "directory holds no .yaml or .yml policy file")])
        }
        return files
    }

    /// Splits one file into its top-level sections, reporting YAML syntax errors with their line.
    static func parseSections(yaml: String, file: String, environment: [String: String]) -> (FileSections?, [PolicyError]) {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch YamlError.duplicatedKeysInMapping(let duplicates, let context) {
            return (nil, [Self.duplicateKeyError(duplicates, first: context.mark, yaml: yaml, file: file)])
        } catch let error as YamlError {
            return (nil, [PolicyError(file: file, line: Self.line(of: error), message: "invalid YAML: \(Self.problem(of: error))")])
        } catch {
            return (nil, [PolicyError(file: file, line: 1, message: "invalid YAML: \(error)")])
        }
        let reader = PolicyReader(file: file, environment: environment)
        guard let root else {
            reader.fail(nil, "file is empty")
            return (nil, reader.errors)
        }
        guard let entries = reader.mapping(root, "the policy file", allowed: ["gateway", "issuers", "routes"]) else {
            return (nil, reader.errors)
        }
        return (FileSections(reader: reader, gateway: entries["gateway"], issuers: entries["issuers"], routes: entries["routes"]), [])
    }

    /// A duplicate key, at the line of its second occurrence. Yams reports only the first key's position, so the
    /// duplicate is found in the text: the same key at the same column further down (a block mapping), or again
    /// on the same line (a flow mapping). The message never quotes the file (it may hold secrets).
    private static func duplicateKeyError(_ duplicates: [String], first: Mark, yaml: String, file: String) -> PolicyError {
        let key = duplicates.first ?? ""
        let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
        let column = first.column - 1
        var line = first.line
        func isKey(_ text: Substring) -> Bool {
            for quoted in [key, "\"\(key)\"", "'\(key)'"] where text.hasPrefix(quoted) {
                if text.dropFirst(quoted.count).drop(while: { $0 == " " }).first == ":" { return true }
            }
            return false
        }
        if first.line >= 1, first.line <= lines.count {
            let own = lines[first.line - 1]
            let after = own.dropFirst(column + key.count)
            if let range = after.range(of: key), isKey(after[range.lowerBound...]) {
                line = first.line  // a second `key:` on the same line (flow mapping)
            } else {
                for index in first.line..<lines.count {
                    let text = lines[index]
                    let indent = text.prefix { $0 == " " }.count
                    let content = text.dropFirst(indent)
                    if content.isEmpty || content.hasPrefix("#") { continue }
                    if indent < column { break }  // the mapping ended
                    if indent == column, isKey(content) {
                        line = index + 1
                        break
                    }
                }
            }
        }
        let names = duplicates.map { "'\($0)'" }.joined(separator: ", ")
        return PolicyError(file: file, line: line, message: "duplicate key \(names) in one mapping (first at line \(first.line)): each key may appear once")
    }

    private static func line(of error: YamlError) -> Int {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): mark.line
        default: 1
        }
    }

    private static func problem(of error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _): problem
        default: "\(error)"
        }
    }
}

/// The top-level sections of one policy file, still as YAML nodes.
struct FileSections {
    let reader: PolicyReader
    let gateway: Node?
    let issuers: Node?
    let routes: Node?
}
