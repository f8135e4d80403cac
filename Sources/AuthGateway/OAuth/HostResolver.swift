import Foundation
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Resolves host names for metadata-document fetches on threads of its own: `getaddrinfo` blocks, and on Swift's
/// cooperative pool a slow name server would stall every async task of the process. The caller waits at most
/// `timeout`; a lookup that outlives it keeps its thread until the system resolver gives up, so at most `threads`
/// lookups exist at once and a further one is refused at once instead of queueing.
final class HostResolver: Sendable {
    /// Why a name gave no addresses; the detail goes to the log only.
    enum Failure: Error, Equatable {
        case unresolvable
        case timedOut
        case busy
    }

    /// The process-wide resolver of metadata fetches.
    static let shared = HostResolver(threads: 4, timeout: .seconds(3))

    let timeout: Duration
    private let threads: Int
    private let pool: NIOThreadPool
    private let running = Mutex(0)
    private let lookup: @Sendable (String) -> [IPAddress]?

    /// - Parameter lookup: the blocking resolution (tests replace it); nil means the name does not resolve.
    init(threads: Int, timeout: Duration, lookup: @escaping @Sendable (String) -> [IPAddress]? = HostResolver.systemLookup) {
        self.threads = threads
        self.timeout = timeout
        self.lookup = lookup
        pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
    }

    deinit {
        pool.shutdownGracefully { _ in }
    }

    /// The addresses of `host` (an IP literal is its own answer, without a lookup).
    func resolve(_ host: String) async throws(Failure) -> [IPAddress] {
        if let literal = IPAddress(host) { return [literal] }
        let admitted = running.withLock { count in
            guard count < threads else { return false }
            count += 1
            return true
        }
        guard admitted else { throw .busy }
        let answer = OneAnswer()
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<[IPAddress], Failure>, Never>) in
            answer.start(continuation)
            // The timer runs on an event loop, so it fires on time even when the cooperative pool is busy.
            let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
            answer.arm(MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: .nanoseconds(nanoseconds)) {
                answer.give(.failure(.timedOut))
            })
            pool.submit { [self] state in
                defer { running.withLock { $0 -= 1 } }
                guard state == .active else { return answer.give(.failure(.busy)) }
                answer.give(lookup(host).map { .success($0) } ?? .failure(.unresolvable))
            }
        }
        return try result.get()
    }

    /// The first of the lookup's answer and the timeout resumes the waiting caller; the other is dropped.
    private final class OneAnswer: Sendable {
        private struct State {
            var continuation: CheckedContinuation<Result<[IPAddress], Failure>, Never>?
            var timer: Scheduled<Void>?
            var answered = false
        }

        private let state = Mutex(State())

        func start(_ continuation: CheckedContinuation<Result<[IPAddress], Failure>, Never>) {
            state.withLock { $0.continuation = continuation }
        }

        /// Keeps the timeout's task so an answer can cancel it; one that comes after the answer is cancelled at once.
        func arm(_ timer: Scheduled<Void>) {
            let answered = state.withLock { state in
                if !state.answered { state.timer = timer }
                return state.answered
            }
            if answered { timer.cancel() }
        }

        func give(_ result: Result<[IPAddress], Failure>) {
            let taken = state.withLock { state in
                defer { state = State(answered: true) }
                return state.answered ? nil : state
            }
            guard let taken else { return }
            taken.timer?.cancel()
            taken.continuation?.resume(returning: result)
        }
    }

    /// `getaddrinfo` for stream sockets, every distinct address it returns.
    static func systemLookup(_ host: String) -> [IPAddress]? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let result else { return nil }
        defer { freeaddrinfo(result) }
        var addresses: [IPAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = result
        while let entry = cursor {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(entry.pointee.ai_addr, entry.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0,
                let address = IPAddress(String(cString: buffer)), !addresses.contains(address)
            {
                addresses.append(address)
            }
            cursor = entry.pointee.ai_next
        }
        return addresses
    }
}
