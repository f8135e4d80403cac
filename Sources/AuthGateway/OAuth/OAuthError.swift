import Foundation
import HTTPTypes
import Hummingbird

/// An OAuth error answer (RFC 6749 §5.2, RFC 7591 §3.2.2): a code clients act on and a description for people.
struct OAuthError: Error, Sendable {
    let code: String
    let description: String
    var status: HTTPResponse.Status = .badRequest
    /// Set when the client authenticated with HTTP Basic: the 401 must then carry a Basic challenge.
    var basicChallenge = false

    static func invalidRequest(_ description: String) -> OAuthError { OAuthError(code: "invalid_request", description: description) }
    static func invalidGrant(_ description: String) -> OAuthError { OAuthError(code: "invalid_grant", description: description) }
    static func invalidScope(_ description: String) -> OAuthError { OAuthError(code: "invalid_scope", description: description) }
    static func invalidTarget(_ description: String) -> OAuthError { OAuthError(code: "invalid_target", description: description) }
    static func unauthorizedClient(_ description: String) -> OAuthError { OAuthError(code: "unauthorized_client", description: description) }
    static func invalidClient(_ description: String, basic: Bool = false) -> OAuthError {
        OAuthError(code: "invalid_client", description: description, status: .unauthorized, basicChallenge: basic)
    }

    var response: Response {
        var headers = OAuthResponse.noStoreHeaders
        if basicChallenge { headers[.wwwAuthenticate] = #"Basic realm="oauth""# }
        // A store or signing failure: the client may retry, and should know when (as /auth's 503s say).
        if status == .serviceUnavailable { headers[.retryAfter] = "5" }
        return OAuthResponse.json(["error": code, "error_description": description], status: status, headers: headers)
    }
}

/// JSON answers of the authorization server's endpoints: never cached, readable by browser-based clients.
enum OAuthResponse {
    static var noStoreHeaders: HTTPFields {
        var headers = MetadataEndpoint.corsHeaders
        headers[.cacheControl] = "no-store"
        headers[.init("Pragma")!] = "no-cache"
        return headers
    }

    static func json(_ object: [String: Any], status: HTTPResponse.Status = .ok, headers: HTTPFields = noStoreHeaders) -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return Response(status: status, headers: headers, body: .init(byteBuffer: .init(bytes: data)))
    }

    /// The preflight answer for endpoints browser-based clients POST to.
    static func preflight() -> Response {
        var headers = MetadataEndpoint.corsHeaders
        headers[.accessControlAllowMethods] = "POST, OPTIONS"
        headers[.accessControlAllowHeaders] = "Authorization, Content-Type"
        headers[.accessControlMaxAge] = "86400"
        return Response(status: .noContent, headers: headers)
    }
}
