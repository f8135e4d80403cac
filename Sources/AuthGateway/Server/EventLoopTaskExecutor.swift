import NIOCore

/// A task executor that runs jobs on one SwiftNIO event loop, so a decision started from a channel handler runs on
/// the channel's own thread.
///
/// A decision whose lookups are all cached never suspends; with this executor it runs right after the current
/// read batch on the same thread and its answer is written without hopping through the global concurrent pool and
/// back (two thread wake-ups per request otherwise).
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
