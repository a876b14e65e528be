"""The console in a real browser (headless Chromium, as tests/test_swagger_ui.py drives it), against
`keyhouse serve`: a person's whole path, from signing in to signing out, with the API seeing every step.

The run takes the screenshots the README shows (docs/console/*.png), at a laptop's size and a phone's.
Needs Debian's chromium and chromium-driver (.ci/run installs them); outside CI the test is skipped
without them, under CI=true it fails.
"""

from __future__ import annotations

from pathlib import Path

import httpx

SHOTS = Path(__file__).resolve().parent.parent / "docs" / "console"
LAPTOP, PHONE = (1280, 860), (390, 844)


def test_a_persons_whole_path_through_the_console(browser, served, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    admin_key, start = served
    api = start()
    site = api.removesuffix("/api/v1")
    # htmx swaps parts of a page in as one waits for them: an element read as it is replaced is read again.
    wait = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(*LAPTOP)
    browser.execute_cdp_cmd("Browser.grantPermissions", {"origin": site, "permissions": [
        "clipboardReadWrite", "clipboardSanitizedWrite"]})
    as_admin = {"Authorization": f"Bearer {admin_key}"}

    def shot(name: str) -> None:
        browser.save_screenshot(str(SHOTS / f"{name}.png"))

    def heading() -> str:
        try:
            found = browser.find_elements(By.TAG_NAME, "h1")
            return found[0].text if found else ""
        except StaleElementReferenceException:  # htmx swapped the page meanwhile
            return ""
        except WebDriverException as e:  # the same race, as Chromium's inspector words it at times
            if "does not belong to the document" not in str(e):
                raise
            return ""

    def on(title: str) -> bool:
        """Whether the page titled `title` is shown (htmx swaps pages in after a click: waited for)."""
        try:
            wait.until(lambda _: heading() == title)
        except TimeoutException:
            raise AssertionError(f"on {heading()!r}, not {title!r}") from None
        return True

    def works(key: str) -> int:
        return httpx.get(f"{api}/keys", headers={"Authorization": f"Bearer {key}"}).status_code

    # What an organization has on a working day: keys of its customers, a ruleset, an API it guards.
    long_name = "tenant-" + "x" * 76  # 83 characters without a space: it wraps, and hides no column
    for name, owner in (("billing worker", None), ("cus_7 staging", "cus_7"), ("cus_9 production", "cus_9"),
                        (long_name, "owner-" + "y" * 60)):
        body = {"name": name, **({"owner_id": owner} if owner else {})}
        assert httpx.post(f"{api}/keys", json=body, headers=as_admin).status_code == 201
    ruleset = {"name": "office", "type": "ip", "region": "us-east-1", "include_by_default": False,
               "rules": [{"source": "192.0.2.0/24", "description": "the office"}]}
    assert httpx.post(f"{api}/deployments/traffic-filter/rulesets", json=ruleset,
                      headers={"Authorization": f"ApiKey {admin_key}"}).status_code == 200
    assert httpx.post(f"{api}/apis", json={"name": "documents", "scopes": ["read", "write"]},
                      headers=as_admin).status_code == 201

    # Signed out, the console asks to sign in; a bad key is refused in place.
    browser.get(f"{site}/console")
    assert on("Sign in")
    browser.find_element(By.ID, "key").send_keys("kh_not-a-key")
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    assert "malformed" in wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".alert"))).text
    shot("sign-in")
    browser.find_element(By.ID, "key").send_keys(admin_key)
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    assert on("Keys")
    assert admin_key not in browser.page_source
    cookie = browser.get_cookie("keyhouse_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and admin_key not in cookie["value"]

    # Create: name, owner, permissions from the picker, an expiry preset; the secret is shown once.
    browser.find_element(By.LINK_TEXT, "New key").click()
    assert on("New key")
    browser.find_element(By.ID, "name").send_keys("checkout, production")
    browser.find_element(By.ID, "owner_id").send_keys("cus_42")
    assert browser.find_element(By.CSS_SELECTOR, "fieldset.picker details[open] summary").text.startswith("Keys")
    browser.find_element(By.XPATH, "//summary[starts-with(., 'Key verification')]").click()
    for permission in ("listKeys", "getKey", "verifyKey"):
        browser.find_element(By.CSS_SELECTOR, f'input[name="permissions"][value="{permission}"]').click()
    Select(browser.find_element(By.ID, "expiry")).select_by_value("90d")
    browser.find_element(By.CSS_SELECTOR, "form.stack button.primary").click()
    assert on("Key created: checkout, production")
    secret = browser.find_element(By.ID, "secret").get_attribute("value")
    assert secret.startswith("kh_") and works(secret) == 200
    copy = browser.find_element(By.CSS_SELECTOR, "[data-copy]")
    copy.click()
    wait.until(lambda _: copy.text == "Copied")
    assert browser.execute_async_script("navigator.clipboard.readText().then(arguments[0])") == secret
    shot("reveal")
    # A reload shows it no more, and makes no second key (the POST was answered with a redirect).
    reveal_page = browser.current_url
    browser.refresh()
    assert on("Shown already: checkout, production") and secret not in browser.page_source
    browser.get(reveal_page)
    assert secret not in browser.page_source
    made = httpx.get(f"{api}/keys", params={"search": "checkout"}, headers=as_admin).json()
    assert len(made) == 1

    # The key's page has everything but the secret.
    browser.find_element(By.PARTIAL_LINK_TEXT, "Open the key").click()
    assert on("checkout, production")
    assert secret not in browser.page_source and "cus_42" in browser.page_source
    shot("key")

    # Reroll with an hour's grace: a new secret, once; the old one still works meanwhile.
    Select(browser.find_element(By.ID, "grace")).select_by_value("3600")
    browser.find_element(By.XPATH, "//button[text()='Reroll the secret']").click()
    assert on("Key rerolled: checkout, production")
    rerolled = browser.find_element(By.ID, "secret").get_attribute("value")
    assert rerolled != secret and works(rerolled) == 200 and works(secret) == 200
    assert "previous secret keeps working until" in browser.page_source

    # The list, searched (htmx swaps the table in place as one types); a long name wraps inside the table.
    browser.get(f"{site}/console/keys")
    assert on("Keys") and secret not in browser.page_source and rerolled not in browser.page_source
    assert browser.execute_script("const t = document.querySelector('.table-wrap');"
                                  "return t.scrollWidth <= t.clientWidth") is True
    assert browser.find_element(By.XPATH, "//th[text()='State']").is_displayed()
    assert rerolled[:7] in browser.find_element(By.ID, "key-table").text  # the masked secret
    shot("keys")
    browser.find_element(By.ID, "q").send_keys("cus_")
    wait.until(lambda _: "2 keys matching" in browser.find_element(By.ID, "key-table").text)
    assert browser.current_url.endswith("/console/keys?q=cus_")  # the search is in the address, for a reload
    browser.find_element(By.ID, "q").clear()
    browser.find_element(By.ID, "q").send_keys("checkout")
    wait.until(lambda _: "1 key matching" in browser.find_element(By.ID, "key-table").text)

    # Night: a secret turns up in a public repository. Find its key by the secret, and revoke it now.
    leaked = httpx.post(f"{api}/keys", json={"name": "leaked", "permissions": ["listKeys"]}, headers=as_admin).json()
    browser.find_element(By.LINK_TEXT, "Find by secret").click()
    assert on("Find a key by its secret")
    shot("find")
    browser.find_element(By.ID, "key").send_keys(leaked["key"])
    browser.find_element(By.CSS_SELECTOR, "form.stack button.primary").click()
    assert on("leaked") and leaked["key"] not in browser.current_url and leaked["key"] not in browser.page_source
    assert "If this key leaked" in browser.find_element(By.CSS_SELECTOR, ".leak").text
    browser.find_element(By.XPATH, "//button[text()='Revoke now']").click()
    assert on("Keys") and "revoked" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    assert works(leaked["key"]) == 401

    # The revoke page of the long-named key scrolls no sideways.
    long_key = httpx.get(f"{api}/keys", params={"search": "tenant-"}, headers=as_admin).json()[0]
    browser.get(f"{site}/console/keys/{long_key['id']}/revoke")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth") is True

    # Revoke, with a confirmation: the key stops working against the API at once.
    browser.get(f"{site}/console/keys?q=checkout")
    wait.until(lambda _: "1 key matching" in browser.find_element(By.ID, "key-table").text)
    browser.find_element(By.LINK_TEXT, "checkout, production").click()
    assert on("checkout, production")
    browser.find_element(By.PARTIAL_LINK_TEXT, "Revoke this key").click()
    assert on("Revoke “checkout, production”?")
    browser.find_element(By.XPATH, "//button[text()='Revoke the key']").click()
    assert "revoked" in wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".notice"))).text
    assert works(rerolled) == 401 and works(secret) == 401
    assert "checkout, production" not in browser.find_element(By.ID, "key-table").text

    # The trail shows each step, and filters.
    browser.find_element(By.LINK_TEXT, "Audit").click()
    assert on("Audit trail")
    actions = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#events .action")]
    for step in ("console.signed_in", "key.created", "key.rerolled", "key.revoked", "key.looked_up"):
        assert step in actions, actions
    assert "leaked" in browser.find_element(By.ID, "events").text  # events name the key, not only its id
    shot("audit")
    browser.find_element(By.CSS_SELECTOR, "form.filters summary").click()
    browser.find_element(By.CSS_SELECTOR, 'input[name="action"][value="key.rerolled"]').click()
    wait.until(lambda _: {a.text for a in browser.find_elements(By.CSS_SELECTOR, "#events .action")}
               == {"key.rerolled"})

    browser.find_element(By.LINK_TEXT, "Rulesets").click()
    assert on("Traffic-filter rulesets") and "192.0.2.0/24" in browser.page_source
    shot("rulesets")
    browser.find_element(By.LINK_TEXT, "APIs").click()
    assert on("Your APIs") and "documents:read" in browser.page_source
    shot("apis")

    # A phone: the same pages, one column; on a key's page, what to do when it leaked comes first.
    browser.set_window_size(*PHONE)
    browser.get(f"{site}/console/keys")
    assert on("Keys")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth") is True
    shot("keys-phone")
    browser.get(f"{site}/console/keys/{long_key['id']}")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth") is True
    leak_top = browser.execute_script("return document.querySelector('.leak').getBoundingClientRect().top")
    edit_top = browser.execute_script("return [...document.querySelectorAll('h2')].find(h => h.textContent"
                                      " === 'Edit').getBoundingClientRect().top")
    assert leak_top < 400 < edit_top, (leak_top, edit_top)
    shot("key-phone")
    browser.get(f"{site}/console/audit")
    assert on("Audit trail")
    shot("audit-phone")
    browser.set_window_size(*LAPTOP)

    # Sign out: the console asks to sign in again, and the old cookie opens nothing.
    browser.find_element(By.XPATH, "//button[text()='Sign out']").click()
    assert on("Sign in") and "You are signed out" in browser.page_source
    browser.add_cookie({**cookie, "sameSite": "Strict"})
    browser.get(f"{site}/console/keys")
    assert on("Sign in") and "/console/sign-in?next=" in browser.current_url

    # No secret in what the server logged.
    logged = "".join(path.read_text() for path in tmp_path.glob("server-*.log"))
    assert logged and all(s not in logged for s in (secret, rerolled, admin_key))
