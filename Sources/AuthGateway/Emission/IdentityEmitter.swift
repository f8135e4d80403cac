import HTTPTypes

/// Builds the headers of an allow answer for the route's backend style.
struct IdentityEmitter: Sendable {
    /// The identity header names in contract order, validated once per policy rather than on every request.
    private let identityNames: [HTTPField.Name]
    /// Each credential-style route's backend header, by route name.
    private let credentialNames: [String: HTTPField.Name]

    init(policy: Policy) {
        // The loader only accepts letters, digits and '-' for these names, so they are valid field names.
        identityNames = policy.gateway.identityHeaders.all.compactMap { HTTPField.Name($0) }
        var credentialNames: [String: HTTPField.Name] = [:]
        for route in policy.routes {
            if case .credential(let credential) = route.backend.style { credentialNames[route.name] = HTTPField.Name(credential.header) }
        }
        self.credentialNames = credentialNames
    }

    func emit(principal: Principal, route: RoutePolicy) -> Decision {
        // Always every identity header, empty when not applicable, so Traefik deletes every client-supplied copy.
        let values = [
            principal.subject, principal.method.headerValue, principal.scopes.joined(separator: " "), principal.client,
            principal.issuer, principal.keyID, route.name,
        ]
        var fields: [HTTPField] = []
        fields.reserveCapacity(values.count + 1)
        for (name, value) in zip(identityNames, values) {
            guard Self.isSafeHeaderValue(value) else {
                return .deny(Denial(kind: .invalidCredential, route: route, reason: "identity value for \(name.rawName) contains control characters"))
            }
            fields.append(HTTPField(name: name, value: value))
        }
        if case .credential(let credential) = route.backend.style {
            guard let value = credential.headerValue, let name = credentialNames[route.name] else {
                return .deny(Denial(kind: .unavailable, route: route, reason: "backend secret (\(credential.origin)) is not set"))
            }
            fields.append(HTTPField(name: name, value: value))
        }
        return .allow(Decision.Allow(principal: principal, route: route, headers: fields))
    }

    static func isSafeHeaderValue(_ value: String) -> Bool {
        !value.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }
}
