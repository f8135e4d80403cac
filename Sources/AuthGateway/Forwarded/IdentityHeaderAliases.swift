import HTTPTypes

/// The configured identity header names as a backend that folds header names may read them: lower case, with `_`
/// and `.` read as `-` (CGI, WSGI and PHP turn `X_Auth_Subject` into `HTTP_X_AUTH_SUBJECT`, as they do
/// `X-Auth-Subject`).
///
/// In forwardAuth mode Traefik deletes the client's copies of the identity headers it gets from `/auth`, but not
/// an alias such as `X_Auth_Subject` (unless the entrypoint sets `aliasHeadersStrategy`), and it shows `/auth` the
/// client's headers. The gateway cannot remove a header there, so a request carrying an alias of an identity
/// header is refused (finding G).
struct IdentityHeaderAliases: Sendable {
    private let folded: Set<String>

    init(gateway: GatewaySettings) {
        folded = Set(gateway.identityHeaders.all.map(Self.fold))
    }

    /// The first header in `headers` that is not an identity header itself but folds onto one, if any.
    ///
    /// Runs on every decision: a name is only folded when it holds `_` or `.`, which ordinary requests lack, so
    /// the usual cost is one byte scan of each name and no allocation.
    func alias(in headers: HTTPFields) -> String? {
        for field in headers {
            let name = field.name.rawName
            guard name.utf8.contains(where: { $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }) else { continue }
            if folded.contains(Self.fold(name)) { return name }
        }
        return nil
    }

    static func fold(_ name: String) -> String {
        String(decoding: name.utf8.map { byte -> UInt8 in
            switch byte {
            case UInt8(ascii: "_"), UInt8(ascii: "."): UInt8(ascii: "-")
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): byte | 0x20
            default: byte
            }
        }, as: UTF8.self)
    }
}
