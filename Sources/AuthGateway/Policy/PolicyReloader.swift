import Foundation
import Logging
import ServiceLifecycle

/// Re-reads the policy when its files change and applies it to the running gateway; an invalid change is logged
/// with its `file:line` errors and the last good policy stays in force.
///
/// A change is loaded only once the files have stopped changing for one interval: a file caught while it is being
/// written (by an editor or `cat >`) can be a shorter policy that is still valid, with a route's `require` cut off.
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
            var watch = Watch(applied: initial)
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                if watch.observe(Self.fingerprint(of: self.path)) { self.reload() }
            }
        }
    }

    /// When to load: after a fingerprint differs from the one last loaded and has stayed the same for one poll.
    public struct Watch: Sendable {
        /// The fingerprint of the files last loaded (or refused).
        private(set) var applied: String
        private var pending: String?

        public init(applied: String) { self.applied = applied }

        /// Records the fingerprint of one poll; returns whether the policy should be loaded now.
        public mutating func observe(_ current: String) -> Bool {
            guard current != applied else {
                pending = nil
                return false
            }
            guard current == pending else {
                pending = current
                return false
            }
            applied = current
            pending = nil
            return true
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

    /// Names, sizes, modification times, inodes, owners and permissions of the policy files: cheap to compute,
    /// changes with every edit, and with a `chmod`/`chown` that makes an unreadable file readable again (which
    /// leaves the modification time alone).
    public static func fingerprint(of path: String) -> String {
        guard let files = try? PolicyLoader.policyFiles(at: path) else { return "missing" }
        return files.map { file in
            let attributes = try? FileManager.default.attributesOfItem(atPath: file)
            let size = (attributes?[.size] as? NSNumber)?.intValue ?? -1
            let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            let inode = (attributes?[.systemFileNumber] as? NSNumber)?.intValue ?? -1
            let mode = (attributes?[.posixPermissions] as? NSNumber)?.intValue ?? -1
            let owner = (attributes?[.ownerAccountID] as? NSNumber)?.intValue ?? -1
            let group = (attributes?[.groupOwnerAccountID] as? NSNumber)?.intValue ?? -1
            return "\(file):\(size):\(modified):\(inode):\(mode):\(owner):\(group)"
        }.joined(separator: "|")
    }
}
