import Foundation
import HTTPTypes
import Hummingbird

/// The HTML pages of the authorization flow: login, consent and error. Every value is escaped; pages are never
/// cached, never framed, and load nothing from elsewhere.
enum AuthorizationPages {
    static func login(_ request: AuthorizationRequest, action: String, csrf: String, message: String? = nil) -> String {
        let hidden = request.parameters.map { hiddenField($0.0, $0.1) }.joined() + hiddenField("csrf_token", csrf)
        return page(
            title: "Sign in",
            body: """
                <h1>Sign in</h1>
                <p><strong>\(escape(request.clientName))</strong> wants to use <strong>\(escape(request.resource))</strong> for you.</p>
                \(message.map { "<p class=\"error\" role=\"alert\">\(escape($0))</p>" } ?? "")
                <form id="login" method="post" action="\(escape(action))">
                \(hidden)
                <label for="username">User name</label>
                <input id="username" name="username" autocomplete="username" autocapitalize="none">
                <label for="password">Password</label>
                <input id="password" name="password" type="password" autocomplete="current-password">
                <details><summary>Use an API key instead</summary>
                <label for="api_key">API key</label>
                <input id="api_key" name="api_key" type="password" autocomplete="off" placeholder="agk_…">
                </details>
                <button type="submit" name="action" value="login">Sign in</button>
                </form>
                """)
    }

    static func consent(_ request: AuthorizationRequest, subject: String, ticket: String, action: String, csrf: String) -> String {
        let scopes = request.scopes.isEmpty ? "<li>no scopes</li>" : request.scopes.map { "<li><code>\(escape($0))</code></li>" }.joined()
        let redirectHost = URLComponents(string: request.redirectURI).map { "\($0.scheme ?? "")://\($0.host ?? "")\($0.port.map { ":\($0)" } ?? "")" }
            ?? request.redirectURI
        return page(
            title: "Allow access?",
            body: """
                <h1>Allow access?</h1>
                <p>Signed in as <strong>\(escape(subject))</strong>.</p>
                <p><strong>\(escape(request.clientName))</strong> (<code>\(escape(request.clientID))</code>) asks to act for you on
                <strong>\(escape(request.resource))</strong> with these scopes:</p>
                <ul>\(scopes)</ul>
                <p class="note">You will be sent back to <code>\(escape(redirectHost))</code>.</p>
                <form id="consent" method="post" action="\(escape(action))">
                \(hiddenField("consent_ticket", ticket))\(hiddenField("csrf_token", csrf))
                <button type="submit" name="decision" value="allow">Allow</button>
                <button type="submit" name="decision" value="deny" class="secondary">Deny</button>
                </form>
                """)
    }

    static func error(_ message: String) -> String {
        page(title: "Cannot continue", body: "<h1>Cannot continue</h1><p class=\"error\" role=\"alert\">\(escape(message))</p>")
    }

    static func response(_ html: String, status: HTTPResponse.Status, cookie: String? = nil) -> Response {
        var headers: HTTPFields = [
            .contentType: "text/html; charset=utf-8",
            .cacheControl: "no-store",
            .contentSecurityPolicy: "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
            .init("X-Frame-Options")!: "DENY",
            .init("Referrer-Policy")!: "no-referrer",
            .xContentTypeOptions: "nosniff",
        ]
        if let cookie { headers[.setCookie] = cookie }
        return Response(status: status, headers: headers, body: .init(byteBuffer: .init(string: html)))
    }

    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    private static func hiddenField(_ name: String, _ value: String) -> String {
        "<input type=\"hidden\" name=\"\(escape(name))\" value=\"\(escape(value))\">\n"
    }

    private static func page(title: String, body: String) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title)) · AuthGateway</title>
        <style>
        body{font-family:system-ui,sans-serif;background:#f4f5f7;color:#1d2129;margin:0;display:flex;justify-content:center}
        main{background:#fff;margin:3rem 1rem;padding:2rem 2.5rem;border-radius:8px;box-shadow:0 1px 4px #0002;max-width:26rem;width:100%}
        h1{font-size:1.4rem;margin-top:0} label{display:block;margin:.8rem 0 .3rem;font-weight:600}
        input{width:100%;box-sizing:border-box;padding:.55rem;border:1px solid #b8bcc4;border-radius:4px;font-size:1rem}
        button{margin-top:1.2rem;padding:.6rem 1.2rem;border:0;border-radius:4px;background:#2456d3;color:#fff;font-size:1rem;cursor:pointer}
        button.secondary{background:#e4e6ea;color:#1d2129;margin-left:.5rem} details{margin-top:1rem} summary{cursor:pointer;color:#2456d3}
        .error{color:#b42318;background:#fef3f2;padding:.6rem;border-radius:4px} .note{color:#5b6270;font-size:.9rem}
        code{background:#f0f1f3;padding:0 .25rem;border-radius:3px;word-break:break-all}
        </style></head>
        <body><main>
        \(body)
        </main></body></html>
        """
    }
}
