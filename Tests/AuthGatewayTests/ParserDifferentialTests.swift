@testable import AuthGateway
import Foundation
import Testing

/// The fast decision parser and SwiftNIO's HTTP/1 decoder never disagree on a request: for generated and mutated
/// heads the fast path either reads exactly what NIO reads, ending where NIO ends the request, or hands the bytes over.
@Suite("Parser differential: fast decision parser against NIO's HTTPRequestDecoder")
struct ParserDifferentialTests {
    /// The kinds of request generated; each is counted on its own.
    enum MutationClass: String, CaseIterable {
        case valid, duplicateField, obsFold, bareCR, bareLF, nul, obsText, colonWhitespace, contentLength
        case transferEncoding, connection, requestLine, pipelined, truncated, byteFlip, sizeLimits
    }

    /// A request before it is turned into bytes.
    struct Shape {
        var requestLine: [UInt8]
        var fields: [[UInt8]]
        var body: [UInt8] = []

        var bytes: [UInt8] {
            var out = requestLine + Array("\r\n".utf8)
            for field in fields { out += field + Array("\r\n".utf8) }
            return out + Array("\r\n".utf8) + body
        }
    }

    /// How many requests of each class one run generates (`PARSER_DIFFERENTIAL_CASES` to run more).
    static let perClass = ProcessInfo.processInfo.environment["PARSER_DIFFERENTIAL_CASES"].flatMap { Int($0) } ?? 400
    /// The generator's seed (`PARSER_DIFFERENTIAL_SEED` to explore others); 0x12 by default, so every run is the same.
    static let seed = ProcessInfo.processInfo.environment["PARSER_DIFFERENTIAL_SEED"].flatMap { UInt64($0) } ?? 0x12

    static let methods = ["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "get"]
    static let targets = [
        "/auth", "/auth", "/auth?x=1&y=%20", "/envoy/auth", "/envoy/auth/ffmpeg/x?q=1", "/envoy/auth/", "/auth/",
        "/authorize", "/healthz", "http://gw/auth", "*", "/auth#frag",
    ]
    static let versions = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "http/1.1"]
    static let traefikFields = [
        "User-Agent: mcp-client/1.0", "Accept: application/json", "Authorization: Bearer agk_abc",
        "X-Forwarded-For: 203.0.113.7", "X-Forwarded-Host: mcp.example.com", "X-Forwarded-Method: GET",
        "X-Forwarded-Port: 443", "X-Forwarded-Proto: https", "X-Forwarded-Uri: /ffmpeg/x?a=b", "Accept-Encoding: gzip",
        "x-api-key: agk_def", "Cookie: a=1; b=2", "X-Empty:", "Connection: keep-alive", "Connection: close",
    ]

    static func pick<T>(_ values: [T], _ random: inout SeededGenerator) -> T {
        values[Int(random.next() % UInt64(values.count))]
    }

    static func chance(_ percent: UInt64, _ random: inout SeededGenerator) -> Bool {
        random.next() % 100 < percent
    }

    /// A well-formed request, mostly a decision request as Traefik sends it.
    static func validShape(_ random: inout SeededGenerator) -> Shape {
        let method = chance(80, &random) ? pick(["GET", "GET", "HEAD", "POST"], &random) : pick(methods, &random)
        let target = chance(80, &random) ? pick(Array(targets.prefix(5)), &random) : pick(targets, &random)
        let version = chance(90, &random) ? "HTTP/1.1" : pick(versions, &random)
        var fields = ["Host: " + pick(["127.0.0.1:9091", "gw", "auth.example.com"], &random)]
        for field in traefikFields where chance(45, &random) && !field.hasPrefix("Connection: close") { fields.append(field) }
        if chance(5, &random) { fields.append("Connection: close") }
        fields.shuffle(using: &random)
        return Shape(requestLine: Array("\(method) \(target) \(version)".utf8), fields: fields.map { Array($0.utf8) })
    }

    /// One request of `mutation` class.
    static func generate(_ mutation: MutationClass, _ random: inout SeededGenerator) -> [UInt8] {
        var shape = validShape(&random)
        let at = { (random: inout SeededGenerator, count: Int) in Int(random.next() % UInt64(max(count, 1))) }
        switch mutation {
        case .valid:
            return shape.bytes
        case .duplicateField:
            let duplicates = ["Host: other", "host: gw", "Authorization: Bearer agk_other", "X-Forwarded-Uri: /admin",
                "Connection: close", "Connection: keep-alive", "X-Forwarded-For: 10.0.0.1", "Content-Length: 0"]
            for _ in 0...(random.next() % 3) {
                shape.fields.insert(Array(pick(duplicates, &random).utf8), at: at(&random, shape.fields.count + 1))
            }
            return shape.bytes
        case .obsFold:
            let fold = pick([" folded", "\tfolded", "  ", " Host: evil", "\t", " : x"], &random)
            shape.fields.insert(Array(fold.utf8), at: at(&random, shape.fields.count + 1))
            return shape.bytes
        case .bareCR, .bareLF, .nul, .obsText:
            var bytes = shape.bytes
            let headLength = bytes.count
            let index = at(&random, headLength)
            switch mutation {
            case .bareCR:
                // Either a CR whose LF is dropped or a CR inserted anywhere.
                if let crlf = crlfPositions(bytes).randomElement(using: &random), chance(50, &random) {
                    bytes.remove(at: crlf + 1)
                } else {
                    bytes.insert(0x0D, at: index)
                }
            case .bareLF:
                if let crlf = crlfPositions(bytes).randomElement(using: &random), chance(70, &random) {
                    bytes.remove(at: crlf)
                } else {
                    bytes.insert(0x0A, at: index)
                }
            case .nul:
                bytes.insert(0x00, at: index)
            default:
                bytes.insert(UInt8(0x80 + random.next() % 0x80), at: index)
            }
            return bytes
        case .colonWhitespace:
            let spelling = pick(["X-A : v", "X-A\t: v", "X-A:v", "X-A:    v   ", "X-A:\t\tv\t", "X-A:: v", "X-A: :v", " X-A: v",
                "Authorization : Bearer agk_x", "Host : evil", "Host:evil", "Host:\tevil\t", "Content-Length : 5",
                "Transfer-Encoding : chunked", "X-A:\u{0B}v", "X-A:\u{0C}v", "X-A\u{0B}: v"], &random)
            shape.fields.insert(Array(spelling.utf8), at: at(&random, shape.fields.count + 1))
            if spelling.hasPrefix("Content-Length") { shape.body = Array("hello".utf8) }
            if spelling.hasPrefix("Transfer-Encoding") { shape.body = Array("0\r\n\r\n".utf8) }
            return shape.bytes
        case .contentLength:
            let values = ["0", "0", "00", "+0", "-0", "0, 0", "0,0", " 0 ", "\t0", "1", "5", "-5", "+5", "05", "0x5", "",
                "99999999999999999999", "18446744073709551616", "9223372036854775807", "5, 5", "0 0", "0\u{0B}", "0\t", "0 ", "\t0\t",
                "0\t "]
            var value = pick(values, &random)
            shape.fields.append(Array("\(pick(["Content-Length", "content-length", "CONTENT-LENGTH"], &random)): \(value)".utf8))
            if chance(30, &random) {
                value = pick(values, &random)
                shape.fields.insert(Array("Content-Length: \(value)".utf8), at: at(&random, shape.fields.count + 1))
            }
            if chance(30, &random) { shape.fields.append(Array("Transfer-Encoding: chunked".utf8)) }
            // A body as long as the value says when it is a small number, sometimes with a request behind it.
            let length = Int(value).map { min(max($0, 0), 64) } ?? 0
            shape.body = Array(repeating: UInt8(ascii: "x"), count: chance(80, &random) ? length : 5)
            if chance(50, &random) { shape.body += Array("GET /auth HTTP/1.1\r\nHost: x\r\n\r\n".utf8) }
            return shape.bytes
        case .transferEncoding:
            let spelling = pick(["chunked", "Chunked", "CHUNKED", "chunked, identity", "identity, chunked", "\tchunked",
                "chunked\t", "chunked ,", "gzip, chunked", "identity", "", "chunked\u{0B}", " chunked ", "chu nked"], &random)
            shape.fields.insert(
                Array("\(pick(["Transfer-Encoding", "transfer-encoding", "Transfer-encoding"], &random)): \(spelling)".utf8),
                at: at(&random, shape.fields.count + 1))
            if chance(25, &random) { shape.fields.append(Array("Content-Length: 0".utf8)) }
            shape.body = Array(pick(["0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n", "", "GET /auth HTTP/1.1\r\nHost: x\r\n\r\n"], &random).utf8)
            return shape.bytes
        case .connection:
            let values = ["close", "Close", "CLOSE", "close, keep-alive", "keep-alive, close", "close\t", " close ", "clo se",
                "closed", ",close", "close,", ", ,close", "upgrade", "keep-alive", "Keep-Alive", "te, close", "close\u{0B}", "",
                "\tclose", "close\t, keep-alive", "keep-alive,\tclose", "keep-alive\t", "close \t", "close ,keep-alive"]
            for _ in 0...(random.next() % 2) {
                shape.fields.insert(
                    Array("\(pick(["Connection", "connection", "CONNECTION"], &random)): \(pick(values, &random))".utf8),
                    at: at(&random, shape.fields.count + 1))
            }
            return shape.bytes + (chance(60, &random) ? validShape(&random).bytes : [])
        case .requestLine:
            let spellings = ["GET /auth HTTP/1.1 ", "GET  /auth HTTP/1.1", "GET\t/auth HTTP/1.1", "GET /auth\tHTTP/1.1",
                " GET /auth HTTP/1.1", "GET /auth HTTP/1.1\t", "GET /auth  HTTP/1.1", "GET /auth HTTP/1.10", "GET /auth HTTP/1.1.1",
                "GET /auth HTTP/01.1", "GET /auth HTTP/1", "GET /auth", "GET /auth?a b HTTP/1.1", "GET /auth? HTTP/1.1",
                "GET /auth?\u{7F} HTTP/1.1", "GET /envoy/auth/%2e%2e/admin HTTP/1.1", "GET /auth?x=%00 HTTP/1.1", "GET //auth HTTP/1.1",
                "GET /auth/../auth HTTP/1.1", "GET auth HTTP/1.1", "GET /auth HTTP/1.1\r"]
            shape.requestLine = Array(pick(spellings, &random).utf8)
            return (chance(10, &random) ? Array("\r\n".utf8) : []) + shape.bytes
        case .pipelined:
            var second = validShape(&random).bytes
            if chance(40, &random) {
                second = generate(pick([.duplicateField, .obsFold, .bareLF, .nul, .contentLength, .colonWhitespace], &random), &random)
            }
            let separator = chance(10, &random) ? Array("\r\n".utf8) : []
            return shape.bytes + separator + second
        case .truncated:
            let bytes = generate(pick([.valid, .valid, .pipelined, .duplicateField, .contentLength], &random), &random)
            return Array(bytes.prefix(at(&random, bytes.count)))
        case .sizeLimits:
            // Around the fast parser's own limits: its field count and head length.
            if chance(50, &random) {
                let count = FastAuthRequestParser.maximumFieldCount - 3 + Int(random.next() % 6)
                shape.fields = [Array("Host: gw".utf8)] + (1..<count).map { Array("X-F\($0): v".utf8) }
            } else {
                let target = FastAuthRequestParser.maximumHeadLength - 4 + Int(random.next() % 8)
                let padding = max(0, target - shape.bytes.count - "X-Pad: ".utf8.count - 2)
                shape.fields.append(Array("X-Pad: ".utf8) + Array(repeating: UInt8(ascii: "a"), count: padding))
            }
            return shape.bytes
        case .byteFlip:
            var bytes = shape.bytes
            for _ in 0...(random.next() % 3) { bytes[at(&random, bytes.count)] = UInt8(truncatingIfNeeded: random.next()) }
            return bytes
        }
    }

    static func crlfPositions(_ bytes: [UInt8]) -> [Int] {
        bytes.indices.dropLast().filter { bytes[$0] == 0x0D && bytes[$0 + 1] == 0x0A }
    }

    /// What one connection carrying `bytes` yields through the fast path: the requests it reads, then NIO's parts for
    /// whatever it hands over (at the end of input too, as `FastAuthByteHandler` does); also each request's extent.
    static func fastPath(_ bytes: [UInt8], parse: Parser = realParser) -> (events: [ParsedRequestEvent], requests: [Range<Int>], closed: Bool) {
        var events: [ParsedRequestEvent] = []
        var requests: [Range<Int>] = []
        var offset = 0
        while offset < bytes.count {
            let outcome = parse(bytes[offset...])
            guard case .request(let request, let length) = outcome else { break }
            events.append(
                .head(
                    method: request.method.rawValue, target: request.target, version: "HTTP/1.1", authority: request.authority,
                    fields: request.headerFields.map { "\($0.name.rawName): \($0.value)" },
                    keepAlive: !request.asksToClose))
            events.append(.end)
            requests.append(offset..<(offset + length))
            offset += length
            // After `Connection: close` nothing more is read.
            if request.asksToClose { return (events, requests, true) }
        }
        if offset < bytes.count { events += NIORequestReference.events(bytes[offset...], closing: true) }
        return (events, requests, false)
    }

    typealias Parser = @Sendable (ArraySlice<UInt8>) -> FastAuthRequestParser.Outcome

    static let realParser: Parser = { bytes in bytes.withUnsafeBytes { FastAuthRequestParser.parse($0) } }

    /// What the fast parser answers for `bytes`, in comparable terms.
    static func outcome(_ bytes: ArraySlice<UInt8>, parse: Parser) -> String {
        switch parse(bytes) {
        case .incomplete: "incomplete"
        case .other: "other"
        case .request(let request, let length):
            "request \(length) \(request.method.rawValue) \(request.target) \(request.authority ?? "-") \(request.headerFields)"
        }
    }

    /// Counts for one class.
    struct Tally: CustomStringConvertible {
        var cases = 0
        /// Requests the fast parser read itself (a pipelined pair can add two).
        var readFast = 0
        /// Cases where some bytes went to NIO.
        var handedOver = 0
        var nioErrors = 0
        var disagreements = 0
        var description: String {
            "\(cases) cases, \(readFast) requests read fast, \(handedOver) handed over, \(nioErrors) with a NIO error, \(disagreements) disagreements"
        }
    }

    /// Compares one case; returns a description of the disagreement, or nil.
    static func disagreement(_ bytes: [UInt8], tally: inout Tally, parse: Parser = realParser) -> String? {
        let reference = NIORequestReference.events(bytes[...], closing: true)
        let fast = fastPath(bytes, parse: parse)
        tally.readFast += fast.requests.count
        if fast.requests.last?.upperBound != bytes.count || fast.closed { tally.handedOver += fast.closed ? 0 : 1 }
        if reference.contains(where: { if case .error = $0 { true } else { false } }) { tally.nioErrors += 1 }
        // After `Connection: close` the gateway stops reading, and NIO refuses what follows; compare up to there.
        let expected = fast.closed ? Array(reference.prefix(fast.events.count)) : reference
        if fast.events != expected {
            return "fast path yields \(fast.events), NIO yields \(reference)"
        }
        // Bytes split across reads: any prefix of a request's bytes is either not enough yet or answered as the whole.
        var random = SeededGenerator(state: UInt64(bytes.count))
        for start in [0] + fast.requests.map(\.upperBound) where start < bytes.count {
            let whole = outcome(bytes[start...], parse: parse)
            for _ in 0..<6 {
                let cut = start + Int(random.next() % UInt64(bytes.count - start))
                let part = outcome(bytes[start..<cut], parse: parse)
                guard part == "incomplete" || part == whole else {
                    return "the first \(cut - start) bytes at \(start) are \(part), all of them \(whole)"
                }
            }
        }
        // Each request read fast ends exactly where NIO ends it: NIO completes it on its bytes, not one byte earlier.
        for range in fast.requests {
            let whole = NIORequestReference.events(bytes[range], closing: false)
            guard whole.count == 2, case .head = whole[0], whole[1] == .end else {
                return "NIO does not read bytes \(range) as one whole request: \(whole)"
            }
            let short = NIORequestReference.events(bytes[range.lowerBound..<(range.upperBound - 1)], closing: false)
            guard !short.contains(.end) else { return "NIO ends the request at \(range) before its last byte" }
        }
        return nil
    }

    // Counts with the default seed (0x12), 400 cases a class; each class also prints its line when run. "Read fast"
    // counts requests (a pipelined case can have two), "handed over" cases where some bytes went to NIO, "NIO error"
    // cases where NIO refused some of the bytes; seeds 1-3 at 2,000 cases a class found no disagreement either.
    //   valid             329 read fast,  71 handed over,  22 NIO error    connection   130 read fast, 280 handed over, 190 NIO error
    //   duplicateField    339 read fast,  61 handed over,  21 NIO error    requestLine   40 read fast, 360 handed over, 267 NIO error
    //   obsFold             0 read fast, 400 handed over, 400 NIO error    pipelined    494 read fast, 218 handed over, 170 NIO error
    //   bareCR              0 read fast, 400 handed over, 399 NIO error    truncated     42 read fast, 398 handed over, 398 NIO error
    //   bareLF              0 read fast, 400 handed over, 400 NIO error    byteFlip      70 read fast, 330 handed over, 312 NIO error
    //   nul                 0 read fast, 400 handed over, 400 NIO error    sizeLimits   226 read fast, 174 handed over,  14 NIO error
    //   obsText           105 read fast, 295 handed over, 269 NIO error
    //   colonWhitespace   139 read fast, 261 handed over, 243 NIO error
    //   contentLength      38 read fast, 379 handed over, 350 NIO error
    //   transferEncoding    0 read fast, 400 handed over, 304 NIO error
    // It found one disagreement, fixed in FastAuthRequestParser: a tab in a Content-Length value (`0<TAB>`: NIO
    // refuses it, the fast parser answered) or a Connection value (`close<TAB>`: NIO keeps the connection open, the fast
    // parser closed it); such values now go to NIO (`FastAuthRequestParserTests.tabInFramingValueGoesToTheCodec`).
    @Test("the fast parser reads what NIO reads with the same request boundary, or hands the request over")
    func fastParserAgreesWithNIO() {
        var random = SeededGenerator(state: Self.seed)
        var tallies: [MutationClass: Tally] = [:]
        for mutation in MutationClass.allCases {
            var tally = Tally()
            var reported = 0
            for _ in 0..<Self.perClass {
                let bytes = Self.generate(mutation, &random)
                tally.cases += 1
                if let problem = Self.disagreement(bytes, tally: &tally) {
                    tally.disagreements += 1
                    reported += 1
                    if reported <= 50 {
                        Issue.record("\(mutation.rawValue): \(String(decoding: bytes, as: UTF8.self).debugDescription): \(problem)")
                    }
                }
            }
            tallies[mutation] = tally
            #expect(tally.disagreements == 0, "\(mutation.rawValue): \(tally)")
        }
        for mutation in MutationClass.allCases { print("parser differential \(mutation.rawValue): \(tallies[mutation]!)") }
        // The generator is worth something only if the fast parser reads many of these requests itself.
        #expect((tallies[.valid]?.readFast ?? 0) > Self.perClass / 2, "valid: \(tallies[.valid]!)")
        #expect((tallies[.pipelined]?.readFast ?? 0) > Self.perClass / 2, "pipelined: \(tallies[.pipelined]!)")
    }

    /// The real parser reading `bytes` with the field name `hidden` respelled, so that it never sees that field.
    static func blind(to hidden: String) -> Parser {
        let name = Array(hidden.utf8)
        return { bytes in
            var copy = Array(bytes)
            var index = 0
            while index + name.count <= copy.count {
                if copy[index..<(index + name.count)].elementsEqual(name, by: { $0 | 0x20 == $1 | 0x20 }) { copy[index] = UInt8(ascii: "Q") }
                index += 1
            }
            return realParser(copy[...])
        }
    }

    /// The differential is worth something only if it catches the classic smuggling bugs: a fast parser that ignored
    /// `Transfer-Encoding` or `Content-Length` would be flagged.
    @Test(
        "a fast parser blind to a framing field is caught by the differential",
        arguments: [("transfer-encoding", MutationClass.transferEncoding), ("content-length", .contentLength)])
    func blindParserIsCaught(field: String, mutation: MutationClass) {
        var random = SeededGenerator(state: 0x12)
        var tally = Tally()
        for _ in 0..<100 {
            _ = Self.disagreement(Self.generate(mutation, &random), tally: &tally, parse: Self.blind(to: field))
                .map { _ in tally.disagreements += 1 }
        }
        #expect(tally.disagreements > 10, "\(field) ignored: \(tally)")
    }

    /// Every byte value placed in each part of a decision request's head: the method, the target, the version, a field
    /// name, before and after the colon, a value, and the line ends.
    @Test("every byte value in every part of the head is read as NIO reads it or handed over")
    func everyByteInEveryPart() {
        let parts: [(String, (UInt8) -> [UInt8])] = [
            ("method", { Array("GE".utf8) + [$0] + Array("T /auth HTTP/1.1\r\nHost: gw\r\n\r\n".utf8) }),
            ("after the method", { Array("GET".utf8) + [$0] + Array("/auth HTTP/1.1\r\nHost: gw\r\n\r\n".utf8) }),
            ("target", { Array("GET /auth?a".utf8) + [$0] + Array("b HTTP/1.1\r\nHost: gw\r\n\r\n".utf8) }),
            ("before the version", { Array("GET /auth".utf8) + [$0] + Array("HTTP/1.1\r\nHost: gw\r\n\r\n".utf8) }),
            ("version", { Array("GET /auth HTTP/1".utf8) + [$0] + Array("1\r\nHost: gw\r\n\r\n".utf8) }),
            ("request line end", { Array("GET /auth HTTP/1.1".utf8) + [$0] + Array("\nHost: gw\r\n\r\n".utf8) }),
            ("field name", { Array("GET /auth HTTP/1.1\r\nX-A".utf8) + [$0] + Array("b: v\r\nHost: gw\r\n\r\n".utf8) }),
            ("before the colon", { Array("GET /auth HTTP/1.1\r\nX-A".utf8) + [$0] + Array(": v\r\nHost: gw\r\n\r\n".utf8) }),
            ("after the colon", { Array("GET /auth HTTP/1.1\r\nX-A:".utf8) + [$0] + Array("v\r\nHost: gw\r\n\r\n".utf8) }),
            ("value", { Array("GET /auth HTTP/1.1\r\nAuthorization: Bearer a".utf8) + [$0] + Array("b\r\nHost: gw\r\n\r\n".utf8) }),
            ("value end", { Array("GET /auth HTTP/1.1\r\nX-A: v".utf8) + [$0] + Array("\r\nHost: gw\r\n\r\n".utf8) }),
            ("Host value", { Array("GET /auth HTTP/1.1\r\nHost: g".utf8) + [$0] + Array("w\r\n\r\n".utf8) }),
            ("Content-Length value", { Array("POST /auth HTTP/1.1\r\nHost: gw\r\nContent-Length: 0".utf8) + [$0] + Array("\r\n\r\n".utf8) }),
            ("Connection value", { Array("GET /auth HTTP/1.1\r\nHost: gw\r\nConnection: close".utf8) + [$0] + Array("\r\n\r\nGET /auth HTTP/1.1\r\n\r\n".utf8) }),
            ("line end", { Array("GET /auth HTTP/1.1\r\nHost: gw\r".utf8) + [$0] + Array("\r\n".utf8) }),
            ("head end", { Array("GET /auth HTTP/1.1\r\nHost: gw\r\n".utf8) + [$0] + Array("\n".utf8) }),
        ]
        for (part, make) in parts {
            var tally = Tally()
            var reported = 0
            for byte in UInt8.min...UInt8.max {
                tally.cases += 1
                let bytes = make(byte)
                if let problem = Self.disagreement(bytes, tally: &tally) {
                    tally.disagreements += 1
                    reported += 1
                    if reported <= 5 { Issue.record("byte \(byte) in the \(part): \(problem)") }
                }
            }
            #expect(tally.disagreements == 0, "\(part): \(tally)")
        }
    }
}
