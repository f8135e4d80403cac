import Crypto
import Foundation
import Testing
import TokenStore

/// The token store's side of the built-in authorization server: codes, refresh-token families, grants, consent
/// tickets and client secrets.
@Suite("OAuth records in the token store")
struct OAuthStoreTests {
    static let resource = "https://mcp.example.com/ffmpeg"
    static let redirect = "http://127.0.0.1:33418/callback"
    static let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

    func store() throws -> TokenStore {
        try TokenStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("oauth-\(UUID().uuidString)/s.sqlite").path)
    }

    func registerPublicClient(_ store: TokenStore, name: String = "claude") throws -> OAuthClient {
        try store.registerClient(ClientRegistration(
            name: name, redirectURIs: [Self.redirect], grantTypes: ["authorization_code", "refresh_token"], authMethod: "none", scope: nil)).client
    }

    /// A consented authorization for `subject` by `client`: its code, already redeemed, and the grant.
    func authorize(_ store: TokenStore, client: OAuthClient, subject: String = "alice", now: Date = Date()) throws -> (code: String, grant: OAuthGrant) {
        let code = try store.createAuthorization(
            clientID: client.id, subject: subject, scope: ["ffmpeg"], resource: Self.resource, redirectURI: Self.redirect,
            codeChallenge: Self.challenge, codeLifetime: 60, grantLifetime: 86400, now: now)
        guard case .redeemed(_, let grant) = try store.redeemCode(code, now: now) else { throw Unexpected("a fresh code was not redeemed") }
        return (code, grant)
    }

    struct Unexpected: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    // MARK: Authorization codes

    @Test("a code is redeemed once, for the grant it was issued in, with the client, redirect URI and challenge it was bound to")
    func codeRedeemsOnce() async throws {
        let store = try store()
        let client = try registerPublicClient(store)
        let code = try store.createAuthorization(
            clientID: client.id, subject: "alice", scope: ["ffmpeg", "memory"], resource: Self.resource, redirectURI: Self.redirect,
            codeChallenge: Self.challenge, codeLifetime: 60, grantLifetime: 86400)
        #expect(code.hasPrefix(OpaqueTokenPrefix.code))
        guard case .redeemed(let record, let grant) = try store.redeemCode(code) else {
            Issue.record("a fresh code was not redeemed")
            return
        }
        #expect(record.clientID == client.id)
        #expect(record.redirectURI == Self.redirect)
        #expect(record.codeChallenge == Self.challenge)
        #expect(record.digest == OpaqueToken.digest(of: code))
        #expect(grant.subject == "alice")
        #expect(grant.scopeList == ["ffmpeg", "memory"])
        #expect(grant.resource == Self.resource)
        #expect(try await store.grantIsActive(id: grant.id))
    }

    @Test("a code presented a second time is refused as reused and revokes its grant with every refresh token from it")
    func reusedCodeRevokesTheGrant() async throws {
        let store = try store()
        let client = try registerPublicClient(store)
        let (code, grant) = try authorize(store, client: client)
        let refresh = try store.issueRefreshToken(grantID: grant.id)

        #expect(try store.redeemCode(code) == .reused)
        #expect(try store.grant(id: grant.id)?.revokedAt != nil)
        #expect(try await store.grantIsActive(id: grant.id) == false)
        #expect(try store.rotateRefreshToken(refresh, clientID: client.id) == .invalid)
    }

    @Test("a code presented after its lifetime is refused as expired, and unknown codes as unknown")
    func expiredAndUnknownCodes() throws {
        let store = try store()
        let client = try registerPublicClient(store)
        let issued = Date().addingTimeInterval(-3600)
        let code = try store.createAuthorization(
            clientID: client.id, subject: "alice", scope: ["ffmpeg"], resource: Self.resource, redirectURI: Self.redirect,
            codeChallenge: Self.challenge, codeLifetime: 60, grantLifetime: 86400, now: issued)
        #expect(try store.redeemCode(code, now: issued.addingTimeInterval(61)) == .expired)
        #expect(try store.redeemCode("agc_" + String(repeating: "0", count: 64)) == .unknown)
        #expect(try store.redeemCode("") == .unknown)
    }

    @Test("a code whose grant was revoked before redemption redeems nothing")
    func codeOfRevokedGrant() throws {
        let store = try store()
        let client = try registerPublicClient(store)
        let code = try store.createAuthorization(
            clientID: client.id, subject: "alice", scope: ["ffmpeg"], resource: Self.resource, redirectURI: Self.redirect,
            codeChallenge: Self.challenge, codeLifetime: 60, grantLifetime: 86400)
        try store.revokeGrants(subject: "alice")
        guard case .redeemed = try store.redeemCode(code) else { return }
        Issue.record("a code of a revoked grant was redeemed")
    }

    // MARK: Refresh tokens

    @Test("rotation spends the refresh token and hands out a new one in the same grant")
    func refreshRotation() throws {
        let store = try store()
        let client = try registerPublicClient(store)
        let (_, grant) = try authorize(store, client: client)
        let first = try store.issueRefreshToken(grantID: grant.id)
        #expect(first.hasPrefix(OpaqueTokenPrefix.refreshToken))
        guard case .rotated(let rotatedGrant, let second) = try store.rotateRefreshToken(first, clientID: client.id) else {
            Issue.record("a fresh refresh token was not rotated")
            return
        }
        #expect(rotatedGrant.id == grant.id)
        #expect(second != first)
        #expect(second.hasPrefix(OpaqueTokenPrefix.refreshToken))
        #expect(try !store.refreshTokenIsUnused(first))
        #expect(try store.refreshTokenIsUnused(second))
        guard case .rotated(_, let third) = try store.rotateRefreshToken(second, clientID: client.id) else {
            Issue.record("the successor was not rotated")
            return
        }
        #expect(third != second)
    }

    @Test("a spent refresh token coming back revokes the whole family: the newest token stops working too")
    func refreshReuseRevokesFamily() async throws {
        let store = try store()
        let client = try registerPublicClient(store)
        let (_, grant) = try authorize(store, client: client)
        let first = try store.issueRefreshToken(grantID: grant.id)
        guard case .rotated(_, let newest) = try store.rotateRefreshToken(first, clientID: client.id) else {
            Issue.record("a fresh refresh token was not rotated")
            return
        }
        #expect(try store.rotateRefreshToken(first, clientID: client.id) == .reused)
        #expect(try await store.grantIsActive(id: grant.id) == false)
        #expect(try store.rotateRefreshToken(newest, clientID: client.id) == .invalid)
    }

    @Test("a refresh token presented by another client is invalid and stays usable by its own client")
    func refreshTokenOfAnotherClient() throws {
        let store = try store()
        let owner = try registerPublicClient(store, name: "owner")
        let other = try registerPublicClient(store, name: "other")
        let (_, grant) = try authorize(store, client: owner)
        let token = try store.issueRefreshToken(grantID: grant.id)
        #expect(try store.rotateRefreshToken(token, clientID: other.id) == .invalid)
        #expect(try store.refreshTokenIsUnused(token))
        guard case .rotated = try store.rotateRefreshToken(token, clientID: owner.id) else {
            Issue.record("another client's attempt spent or revoked the token")
            return
        }
    }

    @Test("refresh tokens end with their grant's lifetime")
    func refreshTokenExpiresWithGrant() throws {
        let store = try store()
        let client = try registerPublicClient(store)
        let start = Date().addingTimeInterval(-7200)
        let (_, grant) = try authorize(store, client: client, now: start)
        let token = try store.issueRefreshToken(grantID: grant.id, now: start)
        #expect(try store.rotateRefreshToken(token, clientID: client.id, now: start.addingTimeInterval(86401)) == .invalid)
    }

    @Test("an unknown refresh token is invalid")
    func unknownRefreshToken() throws {
        let store = try store()
        let client = try registerPublicClient(store)
        #expect(try store.rotateRefreshToken("agr_nope", clientID: client.id) == .invalid)
    }

    // MARK: Grants

    /// The ways a grant is ended; each must end only the grants it names.
    enum Revocation: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case revokeGrant, revokeGrantsOfSubject, disableUser, revokeClient
        var testDescription: String { rawValue }
    }

    @Test("a grant stops being active once it is ended, and other subjects' and clients' grants stay active", arguments: Revocation.allCases)
    func grantRevocation(_ revocation: Revocation) async throws {
        let store = try store()
        try store.addUser(username: "alice", password: "correct horse battery")
        try store.addUser(username: "bob", password: "correct horse battery")
        let client = try registerPublicClient(store, name: "claude")
        let bystanderClient = try registerPublicClient(store, name: "cursor")
        let (_, grant) = try authorize(store, client: client, subject: "alice")
        let (_, bystander) = try authorize(store, client: bystanderClient, subject: "bob")
        let refresh = try store.issueRefreshToken(grantID: grant.id)
        #expect(try await store.grantIsActive(id: grant.id))

        switch revocation {
        case .revokeGrant: try store.revokeGrant(id: grant.id)
        case .revokeGrantsOfSubject: #expect(try store.revokeGrants(subject: "alice") == 1)
        case .disableUser: try store.setDisabled(username: "alice", true)
        case .revokeClient: try store.revokeClient(id: client.id)
        }

        #expect(try await store.grantIsActive(id: grant.id) == false)
        #expect(try store.rotateRefreshToken(refresh, clientID: client.id) == .invalid)
        #expect(try await store.grantIsActive(id: bystander.id))
    }

    @Test("re-enabling a user does not bring back the grants disabling revoked")
    func reenabledUserStaysRevoked() async throws {
        let store = try store()
        try store.addUser(username: "alice", password: "correct horse battery")
        let client = try registerPublicClient(store)
        let (_, grant) = try authorize(store, client: client)
        try store.setDisabled(username: "alice", true)
        try store.setDisabled(username: "alice", false)
        #expect(try await store.grantIsActive(id: grant.id) == false)
    }

    @Test("an unknown grant is not active")
    func unknownGrant() async throws {
        #expect(try await store().grantIsActive(id: "gr_missing") == false)
    }

    // MARK: Consent tickets

    @Test("a consent ticket is taken once, with the subject and request it was created for")
    func consentTicketSingleUse() throws {
        let store = try store()
        let request = Data(#"{"client_id":"cli_1"}"#.utf8)
        let ticket = try store.createConsentTicket(subject: "alice", request: request, lifetime: 600)
        #expect(ticket.hasPrefix(OpaqueTokenPrefix.consentTicket))
        let taken = try #require(try store.takeConsentTicket(ticket))
        #expect(taken.subject == "alice")
        #expect(taken.request == request)
        #expect(try store.takeConsentTicket(ticket) == nil)
    }

    @Test("an expired consent ticket is refused, and unknown tickets too")
    func consentTicketExpiry() throws {
        let store = try store()
        let created = Date().addingTimeInterval(-3600)
        let ticket = try store.createConsentTicket(subject: "alice", request: Data("{}".utf8), lifetime: 10, now: created)
        #expect(try store.takeConsentTicket(ticket, now: created.addingTimeInterval(11)) == nil)
        #expect(try store.takeConsentTicket("agt_unknown") == nil)
    }

    // MARK: Clients

    @Test("a confidential client gets a secret once; only its digest is stored")
    func confidentialClientSecret() throws {
        let store = try store()
        let (client, secret) = try store.registerClient(ClientRegistration(
            name: "svc", redirectURIs: [], grantTypes: ["client_credentials"], authMethod: "client_secret_basic", scope: nil))
        let plaintext = try #require(secret)
        #expect(plaintext.hasPrefix(OpaqueTokenPrefix.clientSecret))
        #expect(client.isConfidential)
        #expect(try store.client(id: client.id)?.secretDigest == Data(SHA256.hash(data: Data(plaintext.utf8))))
        let publicClient = try store.registerClient(ClientRegistration(
            name: "cli", redirectURIs: [Self.redirect], grantTypes: ["authorization_code"], authMethod: "none", scope: nil))
        #expect(publicClient.secret == nil)
        #expect(!publicClient.client.isConfidential)
    }

    /// Which client authenticates, by secret given: `right` is the client's own secret.
    enum SecretGiven: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case right, wrong, missing, empty
        var testDescription: String { rawValue }
    }

    @Test("a confidential client authenticates with its own secret only", arguments: SecretGiven.allCases)
    func confidentialClientAuthentication(_ given: SecretGiven) throws {
        let store = try store()
        let (client, secret) = try store.registerClient(ClientRegistration(
            name: "svc", redirectURIs: [], grantTypes: ["client_credentials"], authMethod: "client_secret_post", scope: nil))
        let presented: String? = switch given {
        case .right: secret
        case .wrong: "agcs_" + String(repeating: "f", count: 64)
        case .missing: nil
        case .empty: ""
        }
        let authenticated = try store.authenticateClient(id: client.id, secret: presented)
        #expect((authenticated?.id == client.id) == (given == .right))
        #expect((authenticated == nil) == (given != .right))
    }

    @Test("a public client authenticates by its id alone and is refused when it sends a secret")
    func publicClientAuthentication() throws {
        let store = try store()
        let client = try registerPublicClient(store)
        #expect(try store.authenticateClient(id: client.id, secret: nil)?.id == client.id)
        #expect(try store.authenticateClient(id: client.id, secret: "agcs_anything") == nil)
        #expect(try store.authenticateClient(id: "cli_unknown", secret: nil) == nil)
    }

    @Test("a revoked client no longer authenticates, even with its right secret")
    func revokedClientAuthentication() throws {
        let store = try store()
        let (client, secret) = try store.registerClient(ClientRegistration(
            name: "svc", redirectURIs: [], grantTypes: ["client_credentials"], authMethod: "client_secret_basic", scope: nil))
        try store.revokeClient(id: client.id)
        #expect(try store.authenticateClient(id: client.id, secret: secret) == nil)
    }

    @Test("revoking an unknown client or revoking a client twice is an error naming it")
    func revokeClientErrors() throws {
        let store = try store()
        #expect(throws: TokenStoreError.clientNotFound(id: "cli_nope")) { try store.revokeClient(id: "cli_nope") }
        let client = try registerPublicClient(store)
        try store.revokeClient(id: client.id)
        #expect(throws: TokenStoreError.clientAlreadyRevoked(id: client.id)) { try store.revokeClient(id: client.id) }
    }

    @Test("refreshing a metadata-document client keeps its revocation in force")
    func metadataDocumentClientStaysRevoked() throws {
        let store = try store()
        let url = "https://app.example.com/oauth/client.json"
        let first = Date().addingTimeInterval(-7200)
        let document = OAuthClient(
            id: url, secretDigest: nil, name: "App", redirectURIs: ["https://app.example.com/cb"], grantTypes: ["authorization_code"],
            authMethod: "none", scope: nil, source: .metadataDocument, createdAt: first, refreshedAt: first, revokedAt: nil)
        try store.saveMetadataDocumentClient(document)
        try store.revokeClient(id: url)
        var refetched = document
        refetched.createdAt = Date()
        refetched.refreshedAt = Date()
        refetched.name = "App v2"
        let saved = try store.saveMetadataDocumentClient(refetched)
        #expect(saved.revokedAt != nil)
        #expect(saved.name == "App v2")
        #expect(try store.client(id: url)?.revokedAt != nil)
        #expect(try store.authenticateClient(id: url, secret: nil) == nil)
    }
}
