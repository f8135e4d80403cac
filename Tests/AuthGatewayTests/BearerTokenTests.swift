@testable import AuthGateway
import HTTPTypes
import Testing

/// Reading `Authorization: Bearer` with byte comparisons gives what the string comparisons it replaced gave.
@Suite("Bearer token reading")
struct BearerTokenTests {
    func read(_ values: String...) -> BearerToken.Reading {
        var headers = HTTPFields()
        for value in values { headers.append(HTTPField(name: .authorization, value: value)) }
        return BearerToken.read(from: headers)
    }

    @Test("the scheme matches in any ASCII case and nothing else", arguments: ["Bearer", "bearer", "BEARER", "bEaReR"])
    func schemeAnyCase(scheme: String) {
        #expect(read("\(scheme) abc.def") == .token("abc.def"))
    }

    @Test(
        "other schemes, look-alike schemes and malformed values are malformed",
        arguments: ["Basic abc", "Bearerx abc", "Beare abc", "Bear\u{0} abc", "B\u{E9}arer abc", "Bearer", "Bearer   ", "Bearer a b", "\u{212A}earer abc"])
    func malformed(value: String) {
        #expect(read(value) == .malformed)
    }

    @Test("spaces around the token are trimmed; a repeated header is malformed; no header is none")
    func trimmingRepeatsAndAbsence() {
        #expect(read("  Bearer   tok  ") == .token("tok"))
        #expect(read("Bearer a", "Bearer b") == .malformed)
        #expect(read() == .none)
    }
}
