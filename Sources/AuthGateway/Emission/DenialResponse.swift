import Foundation

/// The HTTP rendering of a denial: status, `WWW-Authenticate` challenge (RFC 6750 §3) and a small JSON body.
///
/// The body says which class of failure happened and nothing more: unknown, revoked and expired credentials get the
/// same answer, and no secret or internal reason ever appears.
public struct DenialResponse: Sendable, Equatable {
    public let status: Int
    public let challenge: String?
    public let body: String
    public let retryAfter: String?

    public init(_ denial: Denial, gateway: GatewaySettings) {
        let route = denial.route
        let scopes = route?.requirements.scopes ?? []
        switch denial.kind {
        case .missingCredential:
            status = 401
            challenge = Self.challenge(gateway: gateway, route: route, error: nil, scopes: scopes)
            body = Self.body(error: "unauthorized", description: "This resource requires authentication.")
        case .invalidCredential:
            status = 401
            challenge = Self.challenge(gateway: gateway, route: route, error: "invalid_token", scopes: scopes)
            body = Self.body(error: "invalid_token", description: "The credential is invalid, expired or revoked.")
        case .insufficientScope(let required):
            status = 403
            challenge = Self.challenge(gateway: gateway, route: route, error: "insufficient_scope", scopes: required)
            body = Self.body(error: "insufficient_scope", description: "The credential lacks a required scope.", scope: required.joined(separator: " "))
        case .forbidden:
            status = 403
            challenge = nil
            body = Self.body(error: "access_denied", description: "The credential is not allowed to access this resource.")
        case .ambiguousCredential:
            status = 400
            challenge = Self.challenge(gateway: gateway, route: route, error: "invalid_request", scopes: scopes)
            body = Self.body(error: "invalid_request", description: "The request carries more than one credential.")
        case .badRequest:
            status = 400
            challenge = nil
            body = Self.body(error: "invalid_request", description: "The forwarded request is malformed or ambiguous.")
        case .untrusted:
            status = 403
            challenge = nil
            body = Self.body(error: "access_denied", description: "No route allows this request.")
        case .unavailable:
            status = 503
            challenge = nil
            body = Self.body(error: "temporarily_unavailable", description: "The gateway cannot decide this request right now.")
        case .throttled:
            status = 429
            challenge = nil
            body = Self.body(error: "too_many_requests", description: "Too many failed credentials from this address; retry later.")
        }
        switch denial.kind {
        case .unavailable: retryAfter = "5"
        case .throttled(let seconds): retryAfter = String(max(1, seconds))
        default: retryAfter = nil
        }
    }

    /// The URL of the route's protected resource metadata (RFC 9728 §3.1: the well-known path inserted before the
    /// resource's path).
    public static func resourceMetadataURL(gateway: GatewaySettings, route: RoutePolicy?) -> String {
        let base = gateway.origin + "/.well-known/oauth-protected-resource"
        guard let resource = route?.resource, let path = URLComponents(string: resource)?.path, path != "/" else { return base }
        return base + path
    }

    private static func challenge(gateway: GatewaySettings, route: RoutePolicy?, error: String?, scopes: [String]) -> String {
        var parameters = ["realm=\"\(gateway.realm)\""]
        if let error { parameters.append("error=\"\(error)\"") }
        if !scopes.isEmpty { parameters.append("scope=\"\(scopes.joined(separator: " "))\"") }
        parameters.append("resource_metadata=\"\(resourceMetadataURL(gateway: gateway, route: route))\"")
        return "Bearer " + parameters.joined(separator: ", ")
    }

    /// Every value here is a constant of this file or a scope name the policy loader has checked for quotes and
    /// backslashes, so plain interpolation is valid JSON and spares a serializer on the denial path.
    private static func body(error: String, description: String, scope: String? = nil) -> String {
        let scopeMember = scope.map { #","scope":"\#($0)""# } ?? ""
        return #"{"error":"\#(error)","error_description":"\#(description)"\#(scopeMember)}"#
    }
}
