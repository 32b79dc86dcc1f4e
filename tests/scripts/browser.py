"""What the browser tests share: a headless Chromium driven by Selenium,
and the few helpers each step uses. A script calls `start(shots, name)`
once, then uses `driver`, `wait`, `step`, `check`, `submit`, `text_of`,
`shot` and `post` from here."""
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

driver = None
wait = None
_shots = "."
_name = "browser"


def start(shots, name, timeout=10):
    """Starts Chromium; screenshots go to `shots`, a failure's as
    `{name}-failure.png`."""
    global driver, wait, _shots, _name
    _shots, _name = shots, name
    os.makedirs(shots, exist_ok=True)
    options = webdriver.ChromeOptions()
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    wait = WebDriverWait(driver, timeout)
    return driver, wait


def step(text):
    print(f"step: {text}", flush=True)


def fail(text):
    driver.save_screenshot(os.path.join(_shots, f"{_name}-failure.png"))
    print(f"FAILED: {text}\n--- page ---\n{driver.page_source[:4000]}", flush=True)
    try:
        for entry in driver.get_log("browser")[-10:]:
            print(f"browser log: {entry.get('level')} {entry.get('message', '')[:300]}", flush=True)
    except WebDriverException:
        pass
    driver.quit()
    sys.exit(1)


def check(condition, text):
    if not condition:
        fail(text)


def submit(element):
    """Clicks `element` and waits until the page it was on has gone (a
    check right after a click could otherwise read the old page)."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()

    def gone(_):
        # Chromium answers a node of a page being replaced either as stale
        # or as "not in the document": both mean the old page is gone.
        try:
            page.is_enabled()
            return False
        except WebDriverException:
            return True

    wait.until(gone)


def text_of(element_id):
    return driver.find_element(By.ID, element_id).text


def shot(name):
    driver.save_screenshot(os.path.join(_shots, f"{name}.png"))


def csp_violations():
    return [e for e in driver.get_log("browser") if "Content Security Policy" in e.get("message", "")]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def post(url, fields, cookies, origin=None):
    """A form posted straight to a server, outside any page (what an
    attacker's script or a curl would send): the status and the body; a
    redirect is answered as such (3xx), not followed."""
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    request.add_header("Cookie", "; ".join(f"{c['name']}={c['value']}" for c in cookies))
    if origin:
        request.add_header("Origin", origin)
    try:
        with urllib.request.build_opener(_NoRedirect).open(request) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
