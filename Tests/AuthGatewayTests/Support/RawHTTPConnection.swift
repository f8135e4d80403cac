#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

#if canImport(Glibc)
private let systemSend = Glibc.send
#else
private let systemSend = Darwin.send
#endif

/// A blocking TCP connection to 127.0.0.1 that writes raw HTTP/1.1 bytes and parses raw answers, for what an HTTP
/// client library hides: pipelining, half-close, bodies on decision requests, HEAD framing.
///
/// Reads give up after `readTimeoutSeconds` so that a server that wrongly keeps waiting fails the test instead of
/// hanging it; no assertion depends on how long anything takes. Every blocking call runs on a thread of its own:
/// blocking the few threads of Swift's cooperative pool would starve the server under test (its router runs there).
/// A test uses a connection from one task, one call at a time, hence the unchecked `Sendable`.
final class RawHTTPConnection: @unchecked Sendable {
    /// One parsed answer.
    struct Answer {
        let statusLine: String
        let status: Int
        let headers: [(name: String, value: String)]
        let body: String

        func header(_ name: String) -> String? { headers.first { $0.name.lowercased() == name.lowercased() }?.value }
    }

    private let descriptor: Int32
    private var buffer: [UInt8] = []

    init(port: Int, readTimeoutSeconds: Int = 10) throws {
        #if canImport(Glibc)
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        descriptor = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard descriptor >= 0 else { throw POSIXError(.EIO) }
        var timeout = timeval(tv_sec: readTimeoutSeconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(descriptor)
            throw POSIXError(.ECONNREFUSED)
        }
    }

    deinit { close(descriptor) }

    /// Sends all of `bytes`; false when the peer has closed the connection.
    @discardableResult
    func send(_ bytes: [UInt8]) async -> Bool { await Self.offPool { self.sendNow(bytes) } }

    @discardableResult
    func send(_ text: String) async -> Bool { await send(Array(text.utf8)) }

    private func sendNow(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let result = bytes[sent...].withUnsafeBytes { systemSend(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard result > 0 else { return false }
            sent += result
        }
        return true
    }

    /// Half-closes: the server sees end of input after what was sent.
    func shutdownOutput() { shutdown(descriptor, Int32(SHUT_WR)) }

    /// The next answer; nil when the connection ended (or the read timed out) before a whole answer arrived.
    /// `bodyless` is for answers to HEAD, whose Content-Length describes a body that is not sent.
    func readAnswer(bodyless: Bool = false) async -> Answer? { await Self.offPool { self.readAnswerNow(bodyless: bodyless) } }

    private func readAnswerNow(bodyless: Bool) -> Answer? {
        while true {
            if let answer = parseAnswer(bodyless: bodyless) { return answer }
            guard fill() else { return nil }
        }
    }

    /// True when the server closed the connection (end of input or reset) with nothing more sent.
    func readsEndOfStream() async -> Bool { await Self.offPool { self.buffer.isEmpty && !self.fill() } }

    private static func offPool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: work()) }.start()
        }
    }

    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return false }
        buffer.append(contentsOf: chunk[..<count])
        return true
    }

    private func parseAnswer(bodyless: Bool) -> Answer? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = buffer.indices.dropLast(3).first(where: { Array(buffer[$0..<$0 + 4]) == separator }) else { return nil }
        let lines = String(decoding: buffer[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { return nil }
        let headers = lines.dropFirst().compactMap { line -> (name: String, value: String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        let length = bodyless ? 0 : Int(headers.first { $0.name.lowercased() == "content-length" }?.value ?? "0") ?? 0
        guard buffer.count >= end + 4 + length else { return nil }
        let body = String(decoding: buffer[(end + 4)..<(end + 4 + length)], as: UTF8.self)
        buffer.removeFirst(end + 4 + length)
        return Answer(statusLine: lines[0], status: status, headers: headers, body: body)
    }
}
