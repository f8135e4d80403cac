@testable import AuthGateway
import HTTPTypes
import Testing

/// Issue 11 finding 10: `subjects:`, `groups:` and `bind` compare exact UTF-8 bytes. Swift's `String ==` treats
/// canonically equivalent spellings as equal ("é" precomposed (NFC) == "e" + U+0301 (NFD)), while the backend
/// receives and compares the bytes.
@Suite("Finding 10: exact identity comparison")
struct Finding10ExactComparisonTests {
    static let nfc = "jos\u{E9}"
    static let nfd = "jose\u{301}"

    static let routes = """
          - name: only-jose
            match: { host: mcp.example.com, path: "/only/**" }
            accept: [api_key]
            require: { subjects: ["\(nfc)"] }
          - name: bound
            match: { host: mcp.example.com, path: "/memory/{client_name}/sse/{user_id}" }
            accept: [api_key]
            require: { bind: { user_id: subject } }
        """

    func decide(_ fixture: GatewayFixture, key: String, uri: String) async -> Decision {
        await fixture.gateway.engine.decide(headers: forwardedHeaders(uri: uri, extra: [("Authorization", "Bearer \(key)")]), peer: IPAddress("127.0.0.1"))
    }

    @Test("the NFC and NFD spellings are different strings here but equal to Swift's ==")
    func premise() {
        #expect(Self.nfc == Self.nfd)
        #expect(!Self.nfc.utf8.elementsEqual(Self.nfd.utf8))
    }

    @Test("finding 10: subjects: [NFC] refuses a key whose subject is the NFD spelling, and allows the NFC one")
    func subjectsAllowList() async throws {
        let fixture = try GatewayFixture(policy: testPolicy(routes: Self.routes))
        let decomposed = try fixture.issueKey(subject: Self.nfd, scopes: [])
        let composed = try fixture.issueKey(subject: Self.nfc, scopes: [])
        guard case .deny = await decide(fixture, key: decomposed.key, uri: "/only/x") else {
            Issue.record("the NFD subject passed an NFC allow-list")
            return
        }
        guard case .allow = await decide(fixture, key: composed.key, uri: "/only/x") else {
            Issue.record("the NFC subject was refused")
            return
        }
    }

    @Test("finding 10: bind refuses a path capture that is only canonically equivalent to the subject")
    func bindExactBytes() async throws {
        let fixture = try GatewayFixture(policy: testPolicy(routes: Self.routes))
        let key = try fixture.issueKey(subject: Self.nfc, scopes: [])
        guard case .deny = await decide(fixture, key: key.key, uri: "/memory/claude/sse/jose%CC%81") else {
            Issue.record("an NFD capture was bound to the NFC subject")
            return
        }
        guard case .allow = await decide(fixture, key: key.key, uri: "/memory/claude/sse/jos%C3%A9") else {
            Issue.record("the NFC capture was refused")
            return
        }
    }

    @Test("finding 10: a proxied session bound to the NFC subject is foreign to the NFD one")
    func sessionOwnerExactBytes() {
        func owner(_ subject: String) -> SessionOwner {
            SessionOwner(Principal(subject: subject, method: .apiKey, scopes: [], groups: [], client: "cli", issuer: "", keyID: "k", restrictedToRoute: nil))
        }
        #expect(owner(Self.nfc) != owner(Self.nfd))
        #expect(owner(Self.nfc) == owner(Self.nfc))
        #expect(Set([owner(Self.nfc), owner(Self.nfd)]).count == 2)
    }
}
