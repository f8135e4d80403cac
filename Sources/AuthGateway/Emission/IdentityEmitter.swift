/// Builds the headers of an allow answer for the route's backend style.
enum IdentityEmitter {
    static func emit(principal: Principal, route: RoutePolicy, names: IdentityHeaderNames) -> Decision {
        // Always every identity header, empty when not applicable, so Traefik deletes every client-supplied copy.
        var headers: [(name: String, value: String)] = [
            (names.subject, principal.subject),
            (names.method, principal.method.headerValue),
            (names.scopes, principal.scopes.joined(separator: " ")),
            (names.client, principal.client),
            (names.issuer, principal.issuer),
            (names.keyID, principal.keyID),
            (names.route, route.name),
        ]
        if let unsafe = headers.first(where: { !isSafeHeaderValue($0.value) }) {
            return .deny(Denial(kind: .invalidCredential, route: route, reason: "identity value for \(unsafe.name) contains control characters"))
        }
        if case .credential(let credential) = route.backend.style {
            guard let value = credential.headerValue else {
                return .deny(Denial(kind: .unavailable, route: route, reason: "backend secret (\(credential.origin)) is not set"))
            }
            headers.append((credential.header, value))
        }
        return .allow(Decision.Allow(principal: principal, route: route, headers: headers))
    }

    static func isSafeHeaderValue(_ value: String) -> Bool {
        !value.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }
}
