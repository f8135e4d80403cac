import Foundation
import Logging
import ServiceLifecycle

/// Re-reads the policy when its files change and applies it to the running gateway; an invalid change is logged
/// with its `file:line` errors and the last good policy stays in force.
public final class PolicyReloader: Service, Sendable {
    private let path: String
    private let gateway: Gateway
    private let interval: Duration
    private let logger: Logger

    public init(path: String, gateway: Gateway, interval: Duration, logger: Logger) {
        self.path = path
        self.gateway = gateway
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        let interval = self.interval
        let initial = Self.fingerprint(of: path)
        try? await cancelWhenGracefulShutdown {
            var lastSeen = initial
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                let current = Self.fingerprint(of: self.path)
                guard current != lastSeen else { continue }
                lastSeen = current
                self.reload()
            }
        }
    }

    /// Loads and applies the policy now; returns whether it was applied.
    @discardableResult
    public func reload() -> Bool {
        do {
            let loaded = try PolicyLoader.load(path: path)
            gateway.apply(loaded.policy)
            for warning in loaded.warnings { logger.warning("policy: \(warning)") }
            logger.info("policy reloaded", metadata: ["routes": "\(loaded.policy.routes.count)"])
            return true
        } catch {
            logger.error("policy change refused; keeping the last good policy:\n\(error.description)")
            return false
        }
    }

    /// Names, sizes and modification times of the policy files: cheap to compute, changes with every edit.
    static func fingerprint(of path: String) -> String {
        guard let files = try? PolicyLoader.policyFiles(at: path) else { return "missing" }
        return files.map { file in
            let attributes = try? FileManager.default.attributesOfItem(atPath: file)
            let size = (attributes?[.size] as? NSNumber)?.intValue ?? -1
            let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            return "\(file):\(size):\(modified)"
        }.joined(separator: "|")
    }
}
