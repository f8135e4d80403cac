import AuthGateway
import Testing

@Suite("Circuit breaker")
struct CircuitBreakerTests {
    let start = ContinuousClock.now
    let settings = CircuitBreaker.Settings(failureThreshold: 3, cooldown: .seconds(10))

    @Test("it stays closed below the failure threshold")
    func staysClosedBelowThreshold() {
        var breaker = CircuitBreaker(settings: settings)
        breaker.recordFailure(now: start)
        breaker.recordFailure(now: start)
        #expect(breaker.state == .closed(failures: 2))
        let admitted = breaker.admit(now: start)
        #expect(admitted)
    }

    @Test("a success resets the count of consecutive failures")
    func successResets() {
        var breaker = CircuitBreaker(settings: settings)
        breaker.recordFailure(now: start)
        breaker.recordFailure(now: start)
        breaker.recordSuccess()
        breaker.recordFailure(now: start)
        #expect(breaker.state == .closed(failures: 1))
    }

    @Test("the threshold-th consecutive failure opens it for the cool-down")
    func opensAtThreshold() {
        var breaker = CircuitBreaker(settings: settings)
        for _ in 0..<3 { breaker.recordFailure(now: start) }
        #expect(breaker.state == .open(until: start + .seconds(10)))
        let admitted = breaker.admit(now: start + .seconds(9))
        #expect(!admitted)
        #expect(breaker.stateName == "open")
    }

    @Test("after the cool-down exactly one trial is admitted")
    func oneTrialAfterCooldown() {
        var breaker = CircuitBreaker(settings: settings)
        for _ in 0..<3 { breaker.recordFailure(now: start) }
        let admitted = breaker.admit(now: start + .seconds(10))
        #expect(admitted)
        #expect(breaker.stateName == "half_open")
        let second = breaker.admit(now: start + .seconds(11))
        #expect(!second)
    }

    @Test("a successful trial closes it")
    func trialSuccessCloses() {
        var breaker = CircuitBreaker(settings: settings)
        for _ in 0..<3 { breaker.recordFailure(now: start) }
        _ = breaker.admit(now: start + .seconds(10))
        breaker.recordSuccess()
        #expect(breaker.state == .closed(failures: 0))
    }

    @Test("a failed trial opens it for another cool-down")
    func trialFailureReopens() {
        var breaker = CircuitBreaker(settings: settings)
        for _ in 0..<3 { breaker.recordFailure(now: start) }
        _ = breaker.admit(now: start + .seconds(10))
        breaker.recordFailure(now: start + .seconds(12))
        #expect(breaker.state == .open(until: start + .seconds(22)))
    }

    @Test("a trial whose outcome never arrives does not keep it shut for ever")
    func abandonedTrial() {
        var breaker = CircuitBreaker(settings: settings)
        for _ in 0..<3 { breaker.recordFailure(now: start) }
        _ = breaker.admit(now: start + .seconds(10))
        let admitted = breaker.admit(now: start + .seconds(20))
        #expect(admitted)
    }

    @Test("a late failure of a request admitted earlier does not extend the cool-down")
    func lateFailureWhileOpen() {
        var breaker = CircuitBreaker(settings: settings)
        for _ in 0..<3 { breaker.recordFailure(now: start) }
        breaker.recordFailure(now: start + .seconds(5))
        #expect(breaker.state == .open(until: start + .seconds(10)))
    }
}
