@testable import AuthGateway
import HTTPTypes
import Testing

/// The byte-level reader of decision requests answers only requests whose shape and end are beyond doubt, and
/// leaves everything else to SwiftNIO's HTTP/1 codec.
@Suite("Decision request parser")
struct FastAuthRequestParserTests {
    static let traefikRequest = [
        "GET /auth HTTP/1.1", "Host: 127.0.0.1:9091", "User-Agent: mcp-client/1.0", "Accept: application/json",
        "Authorization: Bearer agk_abc", "X-Forwarded-For: 203.0.113.7", "X-Forwarded-Host: mcp.example.com",
        "X-Forwarded-Method: GET", "X-Forwarded-Port: 443", "X-Forwarded-Proto: https", "X-Forwarded-Uri: /ffmpeg/x?a=b",
        "Accept-Encoding: gzip",
    ].joined(separator: "\r\n") + "\r\n\r\n"

    static func head(_ requestLine: String = "GET /auth HTTP/1.1", _ fields: [String] = ["Host: gw"]) -> String {
        ([requestLine] + fields).joined(separator: "\r\n") + "\r\n\r\n"
    }

    static func parse(_ text: String) -> FastAuthRequestParser.Outcome {
        parse(Array(text.utf8))
    }

    static func parse(_ bytes: [UInt8]) -> FastAuthRequestParser.Outcome {
        bytes.withUnsafeBytes { FastAuthRequestParser.parse($0) }
    }

    @Test("a forwardAuth request as Traefik sends it is read whole: target, authority, every other field in order")
    func traefikRequestIsRead() throws {
        guard case .request(let request, let length) = Self.parse(Self.traefikRequest + "GET /next") else {
            Issue.record("not read as a decision request")
            return
        }
        #expect(length == Self.traefikRequest.utf8.count)
        #expect(request.method == .get)
        #expect(request.target == "/auth")
        #expect(request.endpoint == .forwardAuth)
        #expect(request.authority == "127.0.0.1:9091")
        #expect(request.headerFields[.authorization] == "Bearer agk_abc")
        #expect(request.headerFields[HTTPField.Name("x-forwarded-uri")!] == "/ffmpeg/x?a=b")
        #expect(request.headerFields.map(\.name.rawName) == [
            "User-Agent", "Accept", "Authorization", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Method",
            "X-Forwarded-Port", "X-Forwarded-Proto", "X-Forwarded-Uri", "Accept-Encoding",
        ])
        #expect(!request.asksToClose)
    }

    @Test("names keep their spelling, values lose surrounding whitespace, a second Host stays a field")
    func fieldSpellingAndWhitespace() throws {
        let text = Self.head("GET /auth HTTP/1.1", ["host: a", "x-FORWARDED-uri:\t /p \t", "Host: b", "X-Empty:", "Cookie: a=1; b=2"])
        guard case .request(let request, _) = Self.parse(text) else {
            Issue.record("not read")
            return
        }
        #expect(request.authority == "a")
        #expect(request.headerFields.map(\.name.rawName) == ["x-FORWARDED-uri", "Host", "X-Empty", "Cookie"])
        #expect(request.headerFields.map(\.value) == ["/p", "b", "", "a=1; b=2"])
    }

    @Test(
        "decision endpoints and methods are recognised",
        arguments: [
            ("GET /auth HTTP/1.1", FastAuthHandler.Endpoint.forwardAuth), ("HEAD /auth?x=1 HTTP/1.1", .forwardAuth),
            ("POST /auth HTTP/1.1", .forwardAuth), ("OPTIONS /auth HTTP/1.1", .forwardAuth), ("DELETE /envoy/auth HTTP/1.1", .envoy),
            ("PATCH /envoy/auth/ffmpeg/x?q=1 HTTP/1.1", .envoy), ("PUT /envoy/auth?x HTTP/1.1", .envoy),
        ])
    func endpointsRecognised(requestLine: String, endpoint: FastAuthHandler.Endpoint) {
        guard case .request(let request, _) = Self.parse(Self.head(requestLine)) else {
            Issue.record("\(requestLine) not read")
            return
        }
        #expect(request.endpoint == endpoint)
        #expect(request.method.rawValue == String(requestLine.prefix { $0 != " " }))
    }

    @Test(
        "everything it does not fully understand goes to the HTTP codec",
        arguments: [
            ("another endpoint", FastAuthRequestParserTests.head("GET /healthz HTTP/1.1")),
            ("a path that only starts like /auth", FastAuthRequestParserTests.head("GET /authorize HTTP/1.1")),
            ("/auth/ below /auth", FastAuthRequestParserTests.head("GET /auth/ HTTP/1.1")),
            ("/envoy/authx", FastAuthRequestParserTests.head("GET /envoy/authx HTTP/1.1")),
            ("a method the endpoints do not take", FastAuthRequestParserTests.head("TRACE /auth HTTP/1.1")),
            ("a lowercase method", FastAuthRequestParserTests.head("get /auth HTTP/1.1")),
            ("HTTP/1.0", FastAuthRequestParserTests.head("GET /auth HTTP/1.0")),
            ("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            ("absolute-form target", FastAuthRequestParserTests.head("GET http://gw/auth HTTP/1.1")),
            ("two spaces", FastAuthRequestParserTests.head("GET  /auth HTTP/1.1")),
            ("control byte in target", FastAuthRequestParserTests.head("GET /auth?\u{1} HTTP/1.1")),
            ("non-ASCII target", FastAuthRequestParserTests.head("GET /auth?é HTTP/1.1")),
            ("a body", FastAuthRequestParserTests.head("POST /auth HTTP/1.1", ["Content-Length: 5"]) + "hello"),
            ("Content-Length 00", FastAuthRequestParserTests.head("POST /auth HTTP/1.1", ["Content-Length: 00"])),
            ("two Content-Length 0", FastAuthRequestParserTests.head("POST /auth HTTP/1.1", ["Content-Length: 0", "content-length: 0"])),
            ("Transfer-Encoding", FastAuthRequestParserTests.head("POST /auth HTTP/1.1", ["Transfer-Encoding: chunked"]) + "0\r\n\r\n"),
            ("Expect", FastAuthRequestParserTests.head("POST /auth HTTP/1.1", ["Expect: 100-continue"])),
            ("Upgrade", FastAuthRequestParserTests.head("GET /auth HTTP/1.1", ["Upgrade: websocket", "Connection: Upgrade"])),
            ("Connection: upgrade", FastAuthRequestParserTests.head("GET /auth HTTP/1.1", ["Connection: keep-alive, upgrade"])),
            ("obsolete line folding", FastAuthRequestParserTests.head("GET /auth HTTP/1.1", ["X-A: one", " two"])),
            ("space before the colon", FastAuthRequestParserTests.head("GET /auth HTTP/1.1", ["X-A : one"])),
            ("empty name", FastAuthRequestParserTests.head("GET /auth HTTP/1.1", [": one"])),
            ("bare LF ending a line", "GET /auth HTTP/1.1\r\nHost: gw\nX-A: b\r\n\r\n"),
            ("bare CR in a value", FastAuthRequestParserTests.head("GET /auth HTTP/1.1", ["X-A: a\rb"])),
            ("NUL in a value", FastAuthRequestParserTests.head("GET /auth HTTP/1.1", ["X-A: a\u{0}b"])),
            ("DEL in a value", FastAuthRequestParserTests.head("GET /auth HTTP/1.1", ["X-A: a\u{7F}b"])),
            ("request line ending in bare LF", "GET /auth HTTP/1.1\nHost: gw\r\n\r\n"),
            ("too many fields", FastAuthRequestParserTests.head("GET /auth HTTP/1.1", (0...FastAuthRequestParser.maximumFieldCount).map { "X-\($0): v" })),
            ("an oversized head", FastAuthRequestParserTests.head("GET /auth HTTP/1.1", ["X-Big: " + String(repeating: "a", count: FastAuthRequestParser.maximumHeadLength)])),
            ("an oversized unfinished head", "GET /auth HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: FastAuthRequestParser.maximumHeadLength)),
        ])
    func unusualRequestsGoToTheCodec(what: String, text: String) {
        guard case .other = Self.parse(text) else {
            Issue.record("\(what): not handed to the HTTP codec")
            return
        }
    }

    @Test("every proper prefix of a decision request asks for more bytes")
    func prefixesAreIncomplete() {
        let bytes = Array(Self.traefikRequest.utf8)
        for count in 0..<bytes.count {
            guard case .incomplete = Self.parse(Array(bytes[..<count])) else {
                Issue.record("a prefix of \(count) bytes was not incomplete")
                return
            }
        }
    }

    @Test("a request for another endpoint is recognised from its first bytes, before its head is complete")
    func otherEndpointRecognisedEarly() {
        for text in ["POST /oauth/token HTTP/1.1\r\nContent-Le", "GET /ff", "CONNECT ", "X"] {
            guard case .other = Self.parse(text) else {
                Issue.record("\(text.debugDescription) was not handed over at once")
                continue
            }
        }
    }

    @Test(
        "Connection: close is honoured in any case and list position; keep-alive is not a close",
        arguments: [("close", true), ("Close", true), ("keep-alive, close", true), ("keep-alive", false), (" Keep-Alive ", false)])
    func connectionClose(value: String, closes: Bool) {
        guard case .request(let request, _) = Self.parse(Self.head("GET /auth HTTP/1.1", ["Connection: \(value)"])) else {
            Issue.record("not read")
            return
        }
        #expect(request.asksToClose == closes)
    }

    /// Found by the parser differential: NIO refuses `Content-Length: 0<TAB>` (400) while this parser read it as 0,
    /// and NIO keeps a connection with `Connection: close<TAB>` open while this parser closed it.
    @Test(
        "a tab in a Content-Length or Connection value hands the request to the codec",
        arguments: [
            "Content-Length: 0\t", "Content-Length: \t0\t", "Content-Length: 0\t ", "Content-Length:\t0", "Connection: close\t",
            "Connection: \tclose", "Connection: close\t, keep-alive", "Connection: keep-alive\t",
        ])
    func tabInFramingValueGoesToTheCodec(field: String) {
        guard case .other = Self.parse(Self.head("POST /auth HTTP/1.1", ["Host: gw", field])) else {
            Issue.record("\(field.debugDescription): not handed to the HTTP codec")
            return
        }
    }

    @Test("an explicit empty body (Content-Length: 0) is a request it answers")
    func emptyBodyIsRead() {
        guard case .request(_, let length) = Self.parse(Self.head("POST /auth HTTP/1.1", ["Content-Length: 0"]) + "GET") else {
            Issue.record("not read")
            return
        }
        #expect(length == Self.head("POST /auth HTTP/1.1", ["Content-Length: 0"]).utf8.count)
    }
}
