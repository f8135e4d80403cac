/// One problem in a policy file, located at `file:line`.
public struct PolicyError: Error, Sendable, CustomStringConvertible, Equatable {
    public let file: String
    public let line: Int
    public let message: String

    public var description: String { "\(file):\(line): \(message)" }
}

/// Every problem found while loading a policy; the gateway refuses to start on any of them.
public struct PolicyLoadError: Error, Sendable, CustomStringConvertible {
    public let errors: [PolicyError]

    public var description: String { errors.map(\.description).joined(separator: "\n") }
}
