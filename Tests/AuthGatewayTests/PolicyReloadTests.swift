import AuthGateway
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Testing
import TokenStore

@Suite("Policy reload and the Traefik provider endpoint")
struct PolicyReloadTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("reload-\(UUID().uuidString)")

    func write(_ routes: String, trustedProxies: String = "[127.0.0.1/32]") throws -> String {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let file = directory.appendingPathComponent("policy.yaml")
        try testPolicy(trustedProxies: trustedProxies, routes: routes).write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }

    static let ffmpeg = "  - name: ffmpeg\n    match: { path: \"/ffmpeg/**\" }\n    accept: [api_key]\n    backend: { url: \"http://127.0.0.1:9\" }\n"
    static let extra = "  - name: extra\n    match: { path: \"/extra/**\" }\n    accept: [api_key]\n    backend: { url: \"http://127.0.0.1:9\" }\n"

    func gateway(path: String, traefik: String? = nil) throws -> Gateway {
        let store = try TokenStore(path: directory.appendingPathComponent("store.sqlite").path)
        return Gateway(policy: try PolicyLoader.load(path: path).policy, store: store, logger: LoopbackServer.quietLogger, traefikGatewayURL: traefik)
    }

    @Test("a changed policy file replaces the running policy")
    func validChangeIsApplied() throws {
        let path = try write(Self.ffmpeg)
        let gateway = try gateway(path: path)
        let reloader = PolicyReloader(path: path, gateway: gateway, interval: .seconds(60), logger: LoopbackServer.quietLogger)
        _ = try write(Self.ffmpeg + Self.extra)
        #expect(reloader.reload())
        #expect(gateway.engine.policy.routes.map(\.name) == ["ffmpeg", "extra"])
    }

    @Test("an invalid policy change is refused and the last good policy stays in force")
    func invalidChangeKeepsLastGood() throws {
        let path = try write(Self.ffmpeg)
        let gateway = try gateway(path: path)
        let reloader = PolicyReloader(path: path, gateway: gateway, interval: .seconds(60), logger: LoopbackServer.quietLogger)
        _ = try write(Self.ffmpeg + "  - name: broken\n    match: { path: nope }\n    accept: [api_key]\n")
        #expect(!reloader.reload())
        #expect(gateway.engine.policy.routes.map(\.name) == ["ffmpeg"])
    }

    @Test("the Traefik provider endpoint serves the current policy's routers to trusted proxies only")
    func providerEndpoint() async throws {
        let path = try write(Self.ffmpeg)
        let gateway = try gateway(path: path, traefik: "http://127.0.0.1:8080")
        let app = Application(router: gateway.makeRouter(), configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: LoopbackServer.quietLogger)
        try await app.test(.live) { client in
            try await client.execute(uri: "/traefik/dynamic-config", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.bodyText.contains("forwardAuth"))
                #expect(response.bodyText.contains("ffmpeg"))
                #expect(!response.bodyText.contains("extra"))
            }
            let reloader = PolicyReloader(path: path, gateway: gateway, interval: .seconds(60), logger: LoopbackServer.quietLogger)
            _ = try write(Self.ffmpeg + Self.extra)
            reloader.reload()
            try await client.execute(uri: "/traefik/dynamic-config", method: .get) { response in
                #expect(response.bodyText.contains("extra"))
            }
            _ = try write(Self.ffmpeg + Self.extra, trustedProxies: "[10.0.0.0/8]")
            reloader.reload()
            try await client.execute(uri: "/traefik/dynamic-config", method: .get) { response in
                #expect(response.status == .forbidden)
            }
        }
    }

    @Test("without --traefik-gateway-url the provider endpoint does not exist")
    func providerEndpointOff() async throws {
        let gateway = try gateway(path: try write(Self.ffmpeg))
        let app = Application(router: gateway.makeRouter(), configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: LoopbackServer.quietLogger)
        try await app.test(.live) { client in
            try await client.execute(uri: "/traefik/dynamic-config", method: .get) { #expect($0.status == .notFound) }
        }
    }
}
