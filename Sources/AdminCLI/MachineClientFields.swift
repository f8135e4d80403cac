import ArgumentParser
import Foundation
import TokenStore

/// Validation and JSON rendering of the `authctl clients` commands.
enum MachineClientFields {
    static func validate(name: String, grant: String?, subject: String?, scopes: String?, resources: [String], introspect: Bool) throws {
        guard !name.isEmpty, name.count <= 200, !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw ValidationError("NAME must be 1 to 200 characters without control characters")
        }
        guard let grant else {
            guard introspect else { throw ValidationError("give --grant client_credentials, --introspect, or both") }
            guard subject == nil, scopes == nil, resources.isEmpty else {
                throw ValidationError("--subject, --scopes and --resource belong to --grant client_credentials")
            }
            return
        }
        guard grant == "client_credentials" else { throw ValidationError("--grant must be client_credentials, not '\(grant)'") }
        guard let subject else { throw ValidationError("--grant client_credentials needs --subject") }
        try KeyFields.validate(subject: subject, name: name)
        guard let scopes, !(try KeyFields.scopes(scopes)).isEmpty else { throw ValidationError("--grant client_credentials needs --scopes") }
        guard !resources.isEmpty else { throw ValidationError("--grant client_credentials needs at least one --resource") }
        for resource in resources {
            guard let url = URLComponents(string: resource), url.scheme == "https" || url.scheme == "http", url.host?.isEmpty == false,
                url.user == nil, url.password == nil, url.query == nil, url.fragment == nil
            else { throw ValidationError("--resource must be an absolute http(s) URL without query or fragment, not '\(resource)'") }
        }
        guard Set(resources).count == resources.count else { throw ValidationError("--resource lists the same URL twice") }
    }

    /// One client as `clients list --json` and `clients add --json` print it (never its secret).
    static func jsonObject(_ client: OAuthClient) -> [String: Any] {
        var row: [String: Any] = [
            "client_id": client.id, "name": client.name, "source": client.source.rawValue, "redirect_uris": client.redirectURIs,
            "grant_types": client.grantTypes, "token_endpoint_auth_method": client.authMethod,
            "created_at": CLIOutput.timestamp(client.createdAt), "status": client.revokedAt == nil ? "active" : "revoked",
            "introspect": client.mayIntrospect,
        ]
        if let subject = client.subject {
            row["subject"] = subject
            row["scopes"] = client.scope.map { $0.split(separator: " ").map(String.init) } ?? []
            row["resources"] = client.resources
        }
        if let revoked = client.revokedAt { row["revoked_at"] = CLIOutput.timestamp(revoked) }
        return row
    }
}
