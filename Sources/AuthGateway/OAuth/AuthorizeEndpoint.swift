import Foundation
import HTTPTypes
import Hummingbird
import NIOPosix
import TokenStore

/// `/oauth/authorize`: checks the request, shows the login page, checks the password (or API key), shows the
/// consent page, and sends the browser back to the client with a single-use code.
///
/// Forms are protected by a double-submit CSRF token (cookie + hidden field) that only the gateway can make (an HMAC,
/// see `CSRFToken`); the consent ticket is single-use and bound to that token, so a ticket leaked from one browser
/// can neither be used nor spent from another.
struct AuthorizeEndpoint: Sendable {
    static let csrfCookie = "authgateway_csrf"
    static let maximumFormSize = 16 * 1024

    let store: TokenStore
    let validator: AuthorizationRequestValidator
    let throttle = LoginThrottle()

    /// What a consent ticket stands for.
    private struct PendingConsent: Codable {
        var request: AuthorizationRequest
        var csrf: String
        /// The API key the user signed in with, whose end and route restriction the grant keeps.
        var apiKeyID: String?
        /// The signed-in user's groups, for the access tokens' `groups` claim.
        var groups: [String]?
    }

    func show(_ request: Request, context: AuthorizationServerContext) async -> Response {
        let parameters = OAuthParameters(encoded: request.uri.query ?? "")
        let validated: AuthorizationRequest
        do {
            validated = try await validator.validate(parameters, context: context)
        } catch {
            return failureResponse(error)
        }
        // A new token at every sign-in start: a token planted in the browser beforehand is worthless (session fixation).
        guard let key = try? store.gatewaySecret(named: CSRFToken.secretName) else {
            return AuthorizationPages.response(AuthorizationPages.error("The server cannot start a sign-in right now. Try again later."), status: .serviceUnavailable)
        }
        let csrf = CSRFToken.make(key: key)
        let html = AuthorizationPages.login(validated, action: action(context), csrf: csrf)
        return AuthorizationPages.response(html, status: .ok, cookie: cookie(csrf, context: context))
    }

    func submit(_ request: Request, context: AuthorizationServerContext) async -> Response {
        var request = request
        guard request.headers[.contentType]?.lowercased().hasPrefix("application/x-www-form-urlencoded") == true,
            let body = try? await request.collectBody(upTo: Self.maximumFormSize)
        else { return AuthorizationPages.response(AuthorizationPages.error("The form could not be read."), status: .badRequest) }
        let form = OAuthParameters(encoded: String(buffer: body))
        guard let csrf = existingCSRF(request, context: context), let sent = form["csrf_token"], constantTimeEquals(Data(csrf.utf8), Data(sent.utf8)),
            let key = try? store.gatewaySecret(named: CSRFToken.secretName), CSRFToken.isValid(csrf, key: key)
        else {
            return AuthorizationPages.response(
                AuthorizationPages.error("This form has expired or was not sent from this page. Start again from your application."),
                status: .forbidden)
        }
        if let ticket = form["consent_ticket"] {
            return await consent(ticket: ticket, decision: form["decision"], csrf: csrf, context: context)
        }
        // Sign-in attempts per source address (issue 11 finding 7), before any password is checked.
        if let wait = RateLimitScope.current?.exceeded("sign_in", \.signIn) { return RateLimitScope.pageResponse(wait, what: "sign-in attempts") }
        let validated: AuthorizationRequest
        do {
            validated = try await validator.validate(form, context: context)
        } catch {
            return failureResponse(error)
        }
        return await login(validated, form: form, csrf: csrf, context: context)
    }

    private func login(_ authorization: AuthorizationRequest, form: OAuthParameters, csrf: String, context: AuthorizationServerContext) async -> Response {
        var granted = authorization
        let subject: String
        let apiKeyID: String?
        let groups: [String]
        switch await authenticate(form, requested: authorization, context: context) {
        case .success(let who, let scopes, let keyID, let memberOf):
            subject = who
            apiKeyID = keyID
            groups = memberOf
            // The consent page shows, and the grant records, only what the credential may be granted.
            granted.scopes = scopes
        case .failure(let message):
            let html = AuthorizationPages.login(authorization, action: action(context), csrf: csrf, message: message)
            return AuthorizationPages.response(html, status: .unauthorized)
        case .refused(let message):
            return AuthorizationPages.response(AuthorizationPages.error(message), status: .forbidden)
        }
        do {
            let pending = try JSONEncoder().encode(PendingConsent(request: granted, csrf: csrf, apiKeyID: apiKeyID, groups: groups))
            let ticket = try store.createConsentTicket(subject: subject, request: pending, lifetime: context.settings.consentLifetime)
            let html = AuthorizationPages.consent(granted, subject: subject, ticket: ticket, action: action(context), csrf: csrf)
            return AuthorizationPages.response(html, status: .ok)
        } catch {
            return AuthorizationPages.response(AuthorizationPages.error("The server cannot record the sign-in. Try again later."), status: .serviceUnavailable)
        }
    }

    private enum LoginOutcome {
        case success(subject: String, scopes: [String], apiKeyID: String?, groups: [String])
        /// Wrong credentials: the login form again.
        case failure(String)
        /// Right credentials that may not be granted anything asked for.
        case refused(String)
    }

    /// A password login receives at most the user's scopes (none when the operator gave none) and carries the
    /// user's groups; an API-key login at most the key's scopes, and only for the route the key is restricted to,
    /// if any. Failures never say whether the user or key exists.
    private func authenticate(_ form: OAuthParameters, requested: AuthorizationRequest, context: AuthorizationServerContext) async -> LoginOutcome {
        let wrong = LoginOutcome.failure("Wrong user name or password.")
        if let apiKey = form["api_key"] {
            guard APIKeySecret.hasKeyShape(apiKey), let key = try? await store.findKey(digest: APIKeySecret.digest(of: apiKey)),
                key.unusableReason(at: Date()) == nil
            else { return .failure("That API key is not valid.") }
            if let routeName = key.route, context.policy.routes.first(where: { $0.name == routeName })?.resource != requested.resource {
                return .failure("That API key is restricted to another route.")
            }
            let scopes = requested.scopes.filter(key.scopeList.contains)
            if scopes.isEmpty && !requested.scopes.isEmpty { return .failure("That API key carries none of the requested scopes.") }
            return .success(subject: key.subject, scopes: scopes, apiKeyID: key.id, groups: [])
        }
        guard let username = form["username"], let password = form["password"] else { return wrong }
        guard !throttle.isLocked(username) else { return .failure("Too many failed sign-ins for this user. Try again in a few minutes.") }
        let store = self.store
        // bcrypt takes a quarter of a second on purpose: keep it off the threads that serve /auth.
        let user = try? await NIOThreadPool.singleton.runIfActive { try store.authenticateUser(username: username, password: password) }
        guard let user = user ?? nil else {
            throttle.recordFailure(username)
            return wrong
        }
        throttle.recordSuccess(username)
        let scopes = requested.scopes.filter(user.scopeList.contains)
        if scopes.isEmpty && !requested.scopes.isEmpty {
            return .refused("Your account may not use any of the scopes this application asks for. Ask the operator to grant them (authctl user set).")
        }
        return .success(subject: user.username, scopes: scopes, apiKeyID: nil, groups: user.groupList)
    }

    private func consent(ticket: String, decision: String?, csrf: String, context: AuthorizationServerContext) async -> Response {
        // Compared before it is taken: a request with another browser's token must not spend this browser's ticket.
        let stored = try? store.takeConsentTicket(ticket) { candidate in
            guard let pending = try? JSONDecoder().decode(PendingConsent.self, from: candidate.request) else { return false }
            return constantTimeEquals(Data(pending.csrf.utf8), Data(csrf.utf8))
        }
        guard let stored = stored ?? nil, let pending = try? JSONDecoder().decode(PendingConsent.self, from: stored.request) else {
            return AuthorizationPages.response(
                AuthorizationPages.error("This consent page has expired. Start again from your application."), status: .badRequest)
        }
        let request = pending.request
        guard decision == "allow" else {
            return redirect(
                request.redirectURI, ["error": "access_denied", "error_description": "the user denied access"], state: request.state,
                status: .seeOther, context: context)
        }
        return await issueCode(request, subject: stored.subject, apiKeyID: pending.apiKeyID, groups: pending.groups ?? [], context: context)
    }

    private func issueCode(
        _ request: AuthorizationRequest, subject: String, apiKeyID: String?, groups: [String], context: AuthorizationServerContext
    ) async -> Response {
        guard let client = try? store.client(id: request.clientID), client.revokedAt == nil else {
            return AuthorizationPages.response(AuthorizationPages.error("This application's access has been revoked."), status: .badRequest)
        }
        do {
            let code = try store.createAuthorization(
                clientID: client.id, subject: subject, scope: request.scopes, resource: request.resource, redirectURI: request.redirectURI,
                codeChallenge: request.codeChallenge, codeLifetime: context.settings.codeLifetime, grantLifetime: context.settings.refreshTokenLifetime,
                apiKeyID: apiKeyID, groups: groups)
            return redirect(request.redirectURI, ["code": code], state: request.state, status: .seeOther, context: context)
        } catch TokenStoreError.invalidValue {
            // The key signed in with was revoked or expired between sign-in and consent.
            return AuthorizationPages.response(AuthorizationPages.error("That API key is not valid any more. Start again from your application."), status: .badRequest)
        } catch {
            return AuthorizationPages.response(AuthorizationPages.error("The server cannot record the authorization. Try again later."), status: .serviceUnavailable)
        }
    }

    private func failureResponse(_ failure: AuthorizationFailure) -> Response {
        switch failure {
        case .page(let message):
            return AuthorizationPages.response(AuthorizationPages.error(message), status: .badRequest)
        }
    }

    /// Sends the browser back to the client. `iss` goes on every answer, errors included (RFC 9207 §2), so a
    /// client talking to several servers can tell which one answered (mix-up attacks).
    private func redirect(
        _ uri: String, _ values: KeyValuePairs<String, String>, state: String?, status: HTTPResponse.Status, context: AuthorizationServerContext
    ) -> Response {
        var pairs = values.map { ($0.key, $0.value) }
        if let state { pairs.append(("state", state)) }
        pairs.append(("iss", context.issuerURL))
        let location = AuthorizationFailure.redirectURL(uri, parameters: pairs)
        return Response(status: status, headers: [.location: location, .cacheControl: "no-store", .init("Referrer-Policy")!: "no-referrer"])
    }

    private func action(_ context: AuthorizationServerContext) -> String { context.issuerPath + "/oauth/authorize" }

    private func existingCSRF(_ request: Request, context: AuthorizationServerContext) -> String? {
        guard let value = request.cookies[Self.cookieName(context)]?.value, (1...CSRFToken.maximumLength).contains(value.utf8.count),
            value.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) || $0 == UInt8(ascii: ".") })
        else { return nil }
        return value
    }

    /// Over HTTPS the `__Host-` prefix makes browsers refuse the cookie from a sibling subdomain, which could
    /// otherwise plant a known token.
    private static func cookieName(_ context: AuthorizationServerContext) -> String {
        context.issuerURL.hasPrefix("https://") ? "__Host-" + csrfCookie : csrfCookie
    }

    private func cookie(_ value: String, context: AuthorizationServerContext) -> String {
        let secure = context.issuerURL.hasPrefix("https://")
        return Cookie(
            name: Self.cookieName(context), value: value, path: secure ? "/" : context.issuerPath + "/oauth/", secure: secure, httpOnly: true,
            sameSite: .lax
        ).description
    }
}
