#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Hummingbird
import Testing
import TokenStore

/// Finding A: a request body that stalls while the backend has already answered (or timed out) must never leave
/// two readers on the client's body. The gateway runs as its own process: the bug killed it, and must not kill the
/// test runner.
@Suite("Finding A: stalled uploads through the path-style proxy", .serialized)
struct FindingAProxyUploadTests {
    /// A TCP port that accepts connections (the kernel completes the handshake) and never reads or answers.
    final class SilentListener: @unchecked Sendable {
        let port: Int
        private let descriptor: Int32

        init() throws {
            #if canImport(Glibc)
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            #else
            let descriptor = socket(AF_INET, SOCK_STREAM, 0)
            #endif
            self.descriptor = descriptor
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                    bind(descriptor, pointer, length) == 0 && listen(descriptor, 64) == 0 && getsockname(descriptor, pointer, &length) == 0
                }
            }
            guard bound else {
                close(descriptor)
                throw POSIXError(.EADDRNOTAVAIL)
            }
            port = Int(UInt16(bigEndian: address.sin_port))
        }

        deinit { close(descriptor) }
    }

    /// The gateway process with two path-style routes: one to a backend that answers every POST at once with 405
    /// (an SSE-only server), one to a backend that never reads.
    struct Stack {
        let process: Process
        let port: Int
        let key: String
        let early: LoopbackServer
        let silent: SilentListener
        let log: URL

        static func start() async throws -> Stack {
            let router = Router()
            router.post("/u/**") { _, _ in Response(status: .methodNotAllowed) }
            router.get("/u/**") { _, _ in Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: .init(string: "ok"))) }
            let early = try await LoopbackServer(router: router)
            let silent = try SilentListener()
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("authgateway-findingA-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let policy = directory.appendingPathComponent("policy.yaml")
            let routes = """
                  - name: early
                    match: { path: /early/** }
                    accept: [api_key]
                    backend: { style: path, url: "\(early.baseURL)", path: "/u/{subject}", idle_timeout: 2s }
                  - name: silent
                    match: { path: /silent/** }
                    accept: [api_key]
                    backend: { style: path, url: "http://127.0.0.1:\(silent.port)", path: "/u/{subject}", idle_timeout: 1s, failure_threshold: 100 }
                """
            try testPolicy(routes: routes).write(to: policy, atomically: true, encoding: .utf8)
            let db = directory.appendingPathComponent("store.sqlite").path
            let store = try TokenStore(path: db)
            let (_, secret) = try store.issueKey(APIKeyRequest(subject: "alice", name: "cli", scopes: []))
            let log = directory.appendingPathComponent("authgateway.log")
            let (process, port) = try await ProcessRunner.startGateway(policy: policy.path, db: db, log: log)
            return Stack(process: process, port: port, key: secret.plaintext, early: early, silent: silent, log: log)
        }

        func stop() async {
            if process.isRunning { process.terminate() }
            await early.stop()
        }

        /// A POST announcing 100000 body bytes that sends one and then stalls; returns the answer's status.
        func stalledPost(_ path: String) async throws -> Int? {
            let connection = try RawHTTPConnection(port: port, readTimeoutSeconds: 15)
            let head = "POST \(path) HTTP/1.1\r\nHost: mcp.example.com\r\nAuthorization: Bearer \(key)\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
            await connection.send(head)
            return await connection.readAnswer()?.status
        }

        /// Whether the gateway still answers an ordinary request on a fresh connection.
        func stillAnswers() async throws -> Bool {
            guard process.isRunning, let connection = try? RawHTTPConnection(port: port, readTimeoutSeconds: 10) else { return false }
            await connection.send("GET /early HTTP/1.1\r\nHost: mcp.example.com\r\nAuthorization: Bearer \(key)\r\n\r\n")
            return await connection.readAnswer()?.status == 200 && process.isRunning
        }

        var logTail: String { String(((try? String(contentsOf: log, encoding: .utf8)) ?? "").suffix(2000)) }
    }

    @Test("finding A: a stalled upload to a backend that answers early gets 502 and the gateway keeps running")
    func backendAnswersEarly() async throws {
        let stack = try await Stack.start()
        for attempt in 1...3 {
            let status = try await stack.stalledPost("/early")
            #expect(status == 502, "attempt \(attempt): \(String(describing: status))\n\(stack.logTail)")
            // Give a crash (the second reader on the body) the moment it needs to happen.
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await stack.stillAnswers(), "attempt \(attempt): the gateway died\n\(stack.logTail)")
        }
        await stack.stop()
    }

    @Test("finding A: a stalled upload to a backend that never reads gets 504 and the gateway keeps running")
    func backendNeverReads() async throws {
        let stack = try await Stack.start()
        for attempt in 1...3 {
            let status = try await stack.stalledPost("/silent")
            #expect(status == 504, "attempt \(attempt): \(String(describing: status))\n\(stack.logTail)")
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await stack.stillAnswers(), "attempt \(attempt): the gateway died\n\(stack.logTail)")
        }
        await stack.stop()
    }
}
