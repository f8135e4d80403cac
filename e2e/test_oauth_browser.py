"""The built-in authorization server's login and consent pages in a real browser: headless Chromium (selenium)
opens the authorize URL, signs in, allows, and lands on the client's loopback redirect URI with a code that the
token endpoint exchanges for an access token the gateway's /auth accepts.

Screenshots of the login and consent pages are kept in e2e/artifacts/ (gitignored). Without Chromium and
chromedriver the test is skipped, unless CI is set: then it fails.
"""

from __future__ import annotations

import os
import shutil
import threading
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

import e2e_support as s
import oauth_support as o


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_executable(env_name: str, names: tuple, fallbacks: tuple) -> str | None:
    if os.environ.get(env_name):  # an explicit choice: used if it exists, never silently replaced
        path = os.environ[env_name]
        return path if os.access(path, os.X_OK) else None
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for path in fallbacks:
        if os.access(path, os.X_OK):
            return path
    return None


def browser_or_skip() -> tuple:
    """(chromium, chromedriver, selenium webdriver module); skips (or fails under CI) when something is missing."""
    chromium = find_executable("CHROMIUM_BIN", ("chromium", "chromium-browser"), ("/usr/bin/chromium",))
    driver = find_executable("CHROMEDRIVER_BIN", ("chromedriver",), ("/usr/bin/chromedriver",))
    missing = [what for what, path in (("chromium", chromium), ("chromedriver", driver)) if not path]
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
        missing.append("selenium (pip install -r e2e/requirements.txt)")
    if missing:
        reason = ("missing " + ", ".join(missing)
                  + " (Debian: apt-get install chromium chromium-driver; or scripts/install-deps --e2e)")
        if in_ci():
            pytest.fail(f"CI is set and the browser test cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    return chromium, driver, webdriver


class _CallbackHandler(s._QuietHandler):
    """The client's loopback redirect URI: records the query and shows a short page."""

    def do_GET(self):
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        body = b"<!doctype html><title>e2e client</title><p id=done>Authorization received.</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def browser():
    """(chromium, chromedriver, selenium webdriver), checked before any process starts."""
    return browser_or_skip()


@pytest.fixture(scope="module")
def browser_gateway(request, binaries, tmp_path_factory) -> o.OAuthGateway:
    gateway_bin, authctl, _ = binaries
    o.scoped_logs(request)
    processes = s.Processes()
    request.addfinalizer(processes.stop_all)
    notes = s.Backend("notes-browser", s.FfmpegHandler)
    request.addfinalizer(notes.close)
    try:
        return o.start_oauth_gateway(processes, gateway_bin, authctl, tmp_path_factory.mktemp("oauth-browser"),
                                     o.base_env(), name="browser", notes=notes)
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture
def callback_server(request):
    server = ThreadingHTTPServer((s.LOOPBACK, 0), _CallbackHandler)
    server.daemon_threads = True
    server.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()

    def close():
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    request.addfinalizer(close)
    return server


def test_browser_logs_in_consents_and_lands_on_the_redirect_uri_with_a_working_code(browser, browser_gateway,
                                                                                     callback_server, tmp_path):
    chromium, chromedriver, webdriver = browser
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    gw = browser_gateway
    user = gw.add_user("alice")
    redirect_uri = f"http://127.0.0.1:{callback_server.server_address[1]}/callback"
    client = o.register_client(gw.origin, [redirect_uri], client_name="Browser Test Client",
                               token_endpoint_auth_method="none", grant_types=["authorization_code", "refresh_token"])
    verifier, challenge = o.pkce_pair()
    state = "browser-" + os.urandom(6).hex()
    url = o.authorize_url(gw.origin, response_type="code", client_id=client["client_id"], redirect_uri=redirect_uri,
                          code_challenge=challenge, code_challenge_method="S256", resource=gw.resource,
                          scope="notes", state=state)

    o.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1100,1000", "--no-proxy-server", "--no-first-run",
                     "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(30)
        wait = WebDriverWait(driver, 20)

        driver.get(url)
        login = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "form#login")))
        assert driver.get_cookie(o.CSRF_COOKIE), driver.get_cookies()
        driver.save_screenshot(str(o.ARTIFACTS / "oauth-login.png"))
        login.find_element(By.NAME, "username").send_keys(user[0])
        login.find_element(By.NAME, "password").send_keys(user[1])
        login.find_element(By.CSS_SELECTOR, 'button[name="action"][value="login"]').click()

        consent = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "form#consent")))
        page_text = driver.find_element(By.TAG_NAME, "body").text
        assert "Browser Test Client" in page_text, page_text
        assert "notes" in page_text, page_text
        driver.save_screenshot(str(o.ARTIFACTS / "oauth-consent.png"))
        consent.find_element(By.CSS_SELECTOR, 'button[name="decision"][value="allow"]').click()

        wait.until(lambda d: d.current_url.startswith(redirect_uri + "?"))
        wait.until(ec.presence_of_element_located((By.ID, "done")))
        landed = driver.current_url
    finally:
        driver.quit()

    assert callback_server.hits, "the browser never reached the redirect URI"
    query = {k: v[0] for k, v in parse_qs(urlsplit(landed).query).items()}
    assert query.get("state") == state and query.get("iss") == gw.public_url, query
    assert "error" not in query and query.get("code"), query

    reply = o.exchange_code(gw.origin, client["client_id"], query["code"], redirect_uri, verifier)
    assert reply.status == 200, reply
    allowed = gw.auth(reply.json()["access_token"])
    assert allowed.status == 200 and allowed.header("X-Auth-Subject") == "alice", allowed
    for name in ("oauth-login.png", "oauth-consent.png"):
        assert (o.ARTIFACTS / name).stat().st_size > 1000, name
