import Hummingbird
import NIOCore
import Synchronization

/// The client's request body as the proxy streams it upstream, read only through reads the proxy can stop.
///
/// Hummingbird reads the rest of a request body itself once the handler has answered, through the same iterator.
/// async-http-client reads an upload in a task of its own that can outlive the exchange (a backend that answers
/// before reading the body, or never reads it), so a client that stalls its body left that task waiting in the
/// iterator while Hummingbird called it a second time: NIO's single-reader precondition then killed the process.
/// Every read here runs in a task this type owns, and `stop()` cancels the one in progress and waits for it, so
/// once the proxy answers nobody but Hummingbird reads the body. A cancelled read ends the body stream, so
/// Hummingbird closes the connection instead of waiting for the rest.
final class ProxiedRequestBody: Sendable {
    /// What async-http-client reads: each `next()` is one read of the client's body.
    struct Chunks: AsyncSequence, Sendable {
        typealias Element = ByteBuffer
        let body: ProxiedRequestBody

        struct AsyncIterator: AsyncIteratorProtocol {
            let body: ProxiedRequestBody
            mutating func next() async throws -> ByteBuffer? { try await body.read() }
        }

        func makeAsyncIterator() -> AsyncIterator { AsyncIterator(body: body) }
    }

    /// Holds the one iterator of the client's body; only the single read in progress touches it (see `State`).
    private final class IteratorBox: @unchecked Sendable {
        var iterator: RequestBody.AsyncIterator
        init(_ iterator: RequestBody.AsyncIterator) { self.iterator = iterator }
    }

    struct Stopped: Error {}

    private struct State {
        var reading: Task<ByteBuffer?, any Error>?
        var stopped = false
        var ended = false
        var delivered = 0
    }

    private let box: IteratorBox
    private let declaredLength: Int?
    private let state = Mutex(State())

    /// `declaredLength` is the request's `Content-Length`, nil for a chunked body.
    init(_ body: RequestBody, declaredLength: Int?) {
        box = IteratorBox(body.makeAsyncIterator())
        self.declaredLength = declaredLength
    }

    var chunks: Chunks { Chunks(body: self) }

    private func read() async throws -> ByteBuffer? {
        let task = try state.withLock { state -> Task<ByteBuffer?, any Error> in
            guard !state.stopped else { throw Stopped() }
            guard !state.ended else { return Task { nil } }
            // async-http-client reads one chunk at a time; a second concurrent read would be the very bug above,
            // so it fails that read (and with it the upload) instead of reaching the client's body.
            guard state.reading == nil else { throw Stopped() }
            let box = self.box
            let task = Task { try await box.iterator.next() }
            state.reading = task
            return task
        }
        let chunk: ByteBuffer?
        do {
            chunk = try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
        } catch {
            state.withLock { $0.reading = nil }
            throw error
        }
        state.withLock { state in
            state.reading = nil
            if let chunk { state.delivered += chunk.readableBytes } else { state.ended = true }
        }
        return chunk
    }

    /// Stops reading the client's body: a read in progress is cancelled (or, when the declared length has been
    /// delivered and only the end is due, awaited) and no read starts after this returns. True when the whole body
    /// went upstream.
    func stop() async -> Bool {
        let (reading, complete) = state.withLock { state in
            state.stopped = true
            return (state.reading, state.ended || state.delivered == declaredLength)
        }
        if let reading {
            if !complete { reading.cancel() }
            _ = try? await reading.value
        }
        return complete
    }
}
