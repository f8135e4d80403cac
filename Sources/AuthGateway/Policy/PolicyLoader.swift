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
