import AsyncHTTPClient
import Logging
import ServiceLifecycle

/// Checks every proxied backend periodically (any HTTP answer is alive) and expires idle session bindings.
struct BackendHealthMonitor: Service {
    let health: BackendHealth
    let bindings: SessionBindings
    let logger: Logger
    /// How often the monitor looks for due checks; each backend has its own, longer, interval.
    let tick: Duration

    func run() async throws {
        // Graceful shutdown ends the sleep with a CancellationError: that is this service's normal end, not a
        // failure (thrown, it would make the whole process exit with status 1 on SIGTERM).
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let checks = health.dueChecks()
                await withTaskGroup(of: Void.self) { group in
                    for check in checks { group.addTask { await self.run(check) } }
                }
                bindings.removeExpired()
                try await Task.sleep(for: tick)
            }
        }
    }

    private func run(_ check: BackendHealth.Check) async {
        let client = ProxyHTTPClient.client(idleTimeout: .seconds(5))
        var request = HTTPClientRequest(url: check.url)
        request.method = .GET
        do {
            let response = try await client.execute(request, timeout: .seconds(5))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            let before = health.state(of: check.route)
            health.checked(check.route, error: nil)
            if before != "closed" { logger.info("backend answers again", metadata: ["route": "\(check.route)"]) }
        } catch {
            health.checked(check.route, error: "\(error)")
            logger.warning("backend health check failed", metadata: ["route": "\(check.route)", "error": "\(error)", "state": "\(health.state(of: check.route) ?? "-")"])
        }
    }
}
