@testable import AuthGateway
import Testing

/// Issue 11 finding 16: the local-use NAT64 prefix (RFC 8215) embeds an IPv4 address and can reach a private one.
@Suite("Finding 16: metadata fetches never reach 64:ff9b:1::/48")
struct Finding16MetadataAddressTests {
    @Test("finding 16: addresses in 64:ff9b:1::/48 are not public", arguments: ["64:ff9b:1::a00:1", "64:ff9b:1::7f00:1", "64:ff9b:1:ffff::1"])
    func localNAT64(_ text: String) throws {
        let address = try #require(IPAddress(text))
        #expect(!ClientMetadataDocumentFetcher.isPublic(address))
    }

    @Test("finding 16: neighbours of the prefix stay public", arguments: ["64:ff9b:2::1", "2606:4700::1111"])
    func neighbours(_ text: String) throws {
        #expect(ClientMetadataDocumentFetcher.isPublic(try #require(IPAddress(text))))
    }
}
