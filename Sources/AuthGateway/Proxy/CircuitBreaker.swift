/// The circuit breaker of one proxied backend: after `failureThreshold` consecutive failures it stops admitting
/// requests for `cooldown`, then lets a single trial through and closes again when that trial succeeds.
///
/// A value type driven by explicit instants, so every transition is testable without waiting.
public struct CircuitBreaker: Sendable, Equatable {
    /// When to open and for how long.
    public struct Settings: Sendable, Equatable {
        public var failureThreshold: Int
        public var cooldown: Duration

        public init(failureThreshold: Int = 3, cooldown: Duration = .seconds(30)) {
            self.failureThreshold = failureThreshold
            self.cooldown = cooldown
        }
    }

    /// Where the breaker stands.
    public enum State: Sendable, Equatable {
        /// Requests pass; `failures` consecutive failures so far.
        case closed(failures: Int)
        /// Nothing passes until `until`.
        case open(until: ContinuousClock.Instant)
        /// The cool-down is over: one trial, started at `trialStarted`, decides between closed and open.
        case halfOpen(trialStarted: ContinuousClock.Instant)
    }

    public let settings: Settings
    public private(set) var state: State = .closed(failures: 0)

    public init(settings: Settings) {
        self.settings = settings
    }

    /// Whether a request (or health check) may go to the backend now. Admitting the trial after a cool-down moves
    /// the breaker to half-open; the caller must then report the outcome.
    public mutating func admit(now: ContinuousClock.Instant) -> Bool {
        switch state {
        case .closed:
            return true
        case .open(let until):
            guard now >= until else { return false }
            state = .halfOpen(trialStarted: now)
            return true
        case .halfOpen(let started):
            // A trial whose outcome never came (its caller vanished) must not keep the breaker shut for ever.
            guard now - started >= settings.cooldown else { return false }
            state = .halfOpen(trialStarted: now)
            return true
        }
    }

    /// The backend answered.
    public mutating func recordSuccess() {
        state = .closed(failures: 0)
    }

    /// The backend could not be reached or did not answer in time.
    public mutating func recordFailure(now: ContinuousClock.Instant) {
        switch state {
        case .closed(let failures):
            state = failures + 1 >= settings.failureThreshold ? .open(until: now + settings.cooldown) : .closed(failures: failures + 1)
        case .halfOpen:
            state = .open(until: now + settings.cooldown)
        case .open:
            break  // a request admitted before the breaker opened failed late: the cool-down already runs
        }
    }

    /// `closed`, `open` or `half_open`, as the health endpoint shows it.
    public var stateName: String {
        switch state {
        case .closed: "closed"
        case .open: "open"
        case .halfOpen: "half_open"
        }
    }
}
