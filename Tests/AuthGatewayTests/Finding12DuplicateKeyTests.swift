import AuthGateway
import Foundation
import Testing

/// Issue 11 finding 12: a duplicate key is reported at the duplicate's own line, and as the only error.
@Suite("Finding 12: duplicate keys in a policy")
struct Finding12DuplicateKeyTests {
    static let policy = """
        gateway:
          public_url: https://mcp.example.com
          trusted_proxies: [127.0.0.1/32]
        routes:
          - name: a
            match: { path: "/a/**" }
            accept: [api_key]
            require: { scopes: [x] }
            require: { scopes: [y] }
        """

    func errors(loadingFile text: String) throws -> [PolicyError] {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("dup-\(UUID().uuidString).yaml")
        try text.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        do {
            _ = try PolicyLoader.load(path: file.path, environment: [:])
            return []
        } catch {
            return error.errors
        }
    }

    @Test("finding 12: a second require: in one route names its own line, and is the only error")
    func duplicateRequire() throws {
        let errors = try errors(loadingFile: Self.policy)
        #expect(errors.count == 1, "\(errors)")
        #expect(errors.first?.line == 9)
        #expect(errors.first?.message.contains("'require'") == true)
        #expect(errors.first?.message.contains("line 8") == true, "names the first occurrence too")
        #expect(errors.first?.message.contains("public_url") == false, "does not repeat the file's text")
    }

    @Test("finding 12: a duplicate in a flow mapping is reported on its line", arguments: [
        ("gateway:\n  public_url: https://a.example\n  trusted_proxies: [127.0.0.1/32]\nroutes:\n  - { name: a, name: b, match: { path: /a }, accept: [api_key] }\n", 5),
        ("gateway:\n  public_url: https://a.example\n  trusted_proxies: [127.0.0.1/32]\ngateway:\n  public_url: https://b.example\n", 4),
    ])
    func otherDuplicates(_ testCase: (String, Int)) throws {
        let errors = try errors(loadingFile: testCase.0)
        #expect(errors.count == 1, "\(errors)")
        #expect(errors.first?.line == testCase.1, "\(errors)")
    }

    @Test("finding 12: load(yaml:) reports the same line")
    func fromText() {
        do {
            _ = try PolicyLoader.load(yaml: Self.policy)
            Issue.record("loaded")
        } catch {
            #expect(error.errors.map(\.line) == [9])
        }
    }
}
