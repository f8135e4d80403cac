#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Keeps the store's current opening in step with the file at its path: when the file is replaced (a restored copy
/// moved over it: a new inode) the old opening is closed and the new file opened; when it is removed, the store is
/// unavailable (callers answer 503) until a file is there again.
///
/// The path is looked at (one `stat`) at most once per `checkInterval`, by whichever caller comes first after the
/// interval, before it is given the opening; other callers meanwhile only read a clock and an atomic. So a decision
/// that starts `checkInterval` or more after a replacement is made from the new file (or refused), never the old.
/// A background task also looks once per interval, so that an idle gateway lets go of the old file's `-wal` and
/// `-shm` soon after a replacement too (left at their paths, `authctl` would pair them with the restored copy).
final class StoreFileWatch: Sendable {
    private enum State {
        case open(StoreGeneration)
        /// No opening to use: the file is missing, or opening it failed. `reason` is what callers are told.
        case unavailable(reason: String)
    }

    let path: String
    private let checkNanoseconds: Int64
    private let state: Mutex<State>
    /// Monotonic time (ns) after which the next caller looks at the path.
    private let nextCheck = Atomic<Int64>(0)
    /// Set while one caller looks and (re)opens, so two never reopen at once.
    private let checking = Atomic<Bool>(false)
    private let openings = Atomic<Int>(1)
    private let ticker = Mutex<Task<Void, Never>?>(nil)

    init(path: String, first: StoreGeneration, checkInterval: Duration) {
        self.path = path
        let components = checkInterval.components
        checkNanoseconds = max(0, components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000)
        state = Mutex(.open(first))
        nextCheck.store(Self.monotonicNanoseconds() &+ checkNanoseconds, ordering: .relaxed)
        let interval = checkInterval
        let task = Task.detached(priority: .utility) { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self else { return }
                _ = try? self.current()
            }
        }
        ticker.withLock { $0 = task }
    }

    deinit {
        ticker.withLock { $0?.cancel() }
    }

    /// The opening to use now, after looking at the path if the interval has passed; throws while there is none.
    func current() throws -> StoreGeneration {
        let now = Self.monotonicNanoseconds()
        let due = nextCheck.load(ordering: .relaxed)
        if now >= due, checking.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {
            defer {
                nextCheck.store(Self.monotonicNanoseconds() &+ checkNanoseconds, ordering: .relaxed)
                checking.store(false, ordering: .releasing)
            }
            check()
        }
        return try state.withLock { state in
            switch state {
            case .open(let generation): return generation
            case .unavailable(let reason): throw TokenStoreError.unavailable(path: path, reason: reason)
            }
        }
    }

    /// Compares the file at the path with the one open; on a difference, stops using the old opening first (callers
    /// get 503 meanwhile, never the old file's answers), then opens the new file if there is one.
    private func check() {
        let seen = FileIdentity.of(path)
        let retired: StoreGeneration? = state.withLock { state in
            guard case .open(let generation) = state else { return nil }
            if generation.file.isSameFile(as: seen) { return nil }
            state = .unavailable(reason: seen == nil ? "the store file is missing" : "the store file was replaced; reopening")
            return generation
        }
        retired?.retire()
        let isOpen = state.withLock { state in
            if case .open = state { return true }
            return false
        }
        if isOpen { return }
        guard let seen, seen.size > 0 else {
            state.withLock { $0 = .unavailable(reason: "the store file is missing or empty") }
            return
        }
        do {
            try StoreFilePermissions.check(path: path)
            let generation = try StoreGeneration.open(path: path, number: openings.add(1, ordering: .relaxed).newValue)
            state.withLock { $0 = .open(generation) }
        } catch {
            state.withLock { $0 = .unavailable(reason: "the store file cannot be opened: \(error)") }
        }
    }

    private static func monotonicNanoseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }
}
