import Foundation

/// RFC 8414 authorization server metadata for the built-in server. Every endpoint it names is served, and
/// `issuer` is exactly the URL the client derived the metadata location from.
enum AuthorizationServerMetadata {
    static let wellKnownNames = ["oauth-authorization-server", "openid-configuration"]

    static func document(_ context: AuthorizationServerContext) -> [String: Any] {
        var document: [String: Any] = [
            "issuer": context.issuerURL,
            "authorization_endpoint": context.endpoint("authorize"),
            "token_endpoint": context.endpoint("token"),
            "revocation_endpoint": context.endpoint("revoke"),
            "introspection_endpoint": context.endpoint("introspect"),
            "jwks_uri": context.endpoint("jwks.json"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ClientAuthentication.methods,
            "revocation_endpoint_auth_methods_supported": ClientAuthentication.methods,
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": context.scopesSupported,
            "authorization_response_iss_parameter_supported": true,
            "client_id_metadata_document_supported": context.settings.clientMetadataDocuments,
        ]
        if context.registrationEnabled { document["registration_endpoint"] = context.endpoint("register") }
        return document
    }

    /// Whether a well-known request path addresses this issuer: `/.well-known/<name><issuer path>` (RFC 8414 §3.1),
    /// or, for OpenID Connect discovery only, `<issuer path>/.well-known/openid-configuration`.
    static func addresses(_ requestPath: String, context: AuthorizationServerContext) -> Bool {
        let issuerPath = context.issuerPath
        for name in wellKnownNames where requestPath == "/.well-known/\(name)\(issuerPath)" { return true }
        return !issuerPath.isEmpty && requestPath == "\(issuerPath)/.well-known/openid-configuration"
    }
}
