"""Drives the developer portal and the operator console in a real headless
Chromium (Selenium) against a real `pylon dev` the Rust test started: a
developer signs up, an operator approves, the developer makes a key, calls
the API with it from the portal's "try it", from the vendored Swagger UI
and directly, sees the usage count move, rotates and revokes; a second
consumer cannot touch the first's keys. Prints one line per step; exits non-zero naming the step
that failed.

usage: portal_e2e.py CONFIG_JSON
  {"portal": URL, "console": URL, "gateway": "http://127.0.0.1:PORT",
   "host": "weather.localhost", "screenshots": DIR}
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import check, csp_violations, fail, post, shot, start, step, submit, text_of  # noqa: E402

config = json.loads(sys.argv[1])
portal, console, shots = config["portal"], config["console"], config["screenshots"]

driver, wait = start(shots, "portal", 15)


def call(key):
    """GET /prod/today through the gateway, as a client of the API would."""
    request = urllib.request.Request(f"{config['gateway']}/prod/today")
    request.add_header("Host", config["host"])
    if key:
        request.add_header("x-api-key", key)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def eventually(what, test, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if test():
            return
        time.sleep(0.3)
    fail(what)


def sign_up(email, password):
    driver.get(f"{portal}/signup")
    driver.find_element(By.ID, "email").send_keys(email)
    driver.find_element(By.ID, "password").send_keys(password)
    submit(driver.find_element(By.ID, "submit"))
    check("waits for an operator" in wait.until(EC.presence_of_element_located((By.ID, "message"))).text, f"{email} waits for approval")


def log_in(email, password):
    driver.get(f"{portal}/login")
    driver.find_element(By.ID, "email").send_keys(email)
    driver.find_element(By.ID, "password").send_keys(password)
    submit(driver.find_element(By.ID, "submit"))


def approve(email):
    driver.get(f"{console}/login")
    submit(driver.find_element(By.ID, "login"))
    driver.get(f"{console}/consumers")
    rows = driver.find_elements(By.CSS_SELECTOR, "#consumers tbody tr")
    row = [r for r in rows if email in r.text]
    check(row and "PENDING" in row[0].text, f"the console lists {email} as pending")
    submit(row[0].find_element(By.XPATH, ".//button[text()='Approve']"))
    wait.until(EC.presence_of_element_located((By.ID, "consumers")))
    check(any(email in r.text and "APPROVED" in r.text for r in driver.find_elements(By.CSS_SELECTOR, "#consumers tbody tr")), f"{email} is approved")


try:
    step("the catalog lists the published API, its description inert")
    driver.get(portal)
    catalog = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "section.api")))
    check("weather" in catalog.text and "free" in catalog.text, "weather and its plan are listed")
    check("<b>today</b>" in catalog.find_element(By.CSS_SELECTOR, ".description").text, "the description is text")
    shot("portal-catalog")

    step("the public OpenAPI document carries no extension (no backend, no mapping)")
    with urllib.request.urlopen(f"{portal}/apis/weather/prod/openapi.json") as response:
        document = response.read().decode()
    check('"x-pylon' not in document and '"x-amazon' not in document and "/today" in document, "only the public view")

    step("an email with a path in it is refused")
    driver.get(f"{portal}/signup")
    driver.find_element(By.ID, "email").send_keys("x/../victim@example.com")
    driver.find_element(By.ID, "password").send_keys("a long enough password")
    submit(driver.find_element(By.ID, "submit"))
    check("email" in wait.until(EC.presence_of_element_located((By.ID, "error"))).text, "refused naming the email")

    step("a developer signs up and cannot log in before approval")
    sign_up("dev@example.com", "correct horse battery staple")
    log_in("dev@example.com", "correct horse battery staple")
    check("approval" in text_of("error"), "a pending account cannot log in")
    log_in("dev@example.com", "wrong password entirely")
    check("wrong email or password" in text_of("error"), "a wrong password is refused")

    step("the operator approves the developer in the console")
    approve("dev@example.com")

    step("the developer logs in, makes a key, sees its value once")
    log_in("dev@example.com", "correct horse battery staple")
    wait.until(EC.presence_of_element_located((By.ID, "keys")))
    submit(driver.find_element(By.ID, "create-key"))
    key = wait.until(EC.presence_of_element_located((By.ID, "key-value"))).text.strip()
    check(len(key) >= 20, "the key's value is shown")
    shot("portal-key")
    driver.get(f"{portal}/keys")
    check(key not in driver.page_source, "the value is not shown again")

    step("the key calls the API through the gateway; no key is refused")
    eventually("the new key is served by the data plane", lambda: call(key) == 200)
    check(call(None) == 403, "without a key the gateway answers 403")

    step("'try it' calls the gateway from the browser with the key")
    driver.get(f"{portal}/apis/weather/prod")
    form = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "form.try")))
    form.find_element(By.NAME, "key").send_keys(key)
    form.find_element(By.CSS_SELECTOR, "button").click()
    answer = form.find_element(By.CSS_SELECTOR, ".answer")
    eventually("the try-it answer arrives", lambda: answer.text.startswith("200"), 10)
    check("sunny" in answer.text, f"the mock's body is shown ({answer.text})")
    shot("portal-try-it")

    step("no page so far broke a CSP rule")
    problems = csp_violations()
    check(not problems, f"no CSP violations ({problems})")

    step("the interactive reference (vendored Swagger UI) calls the gateway with the key")
    driver.get(f"{portal}/apis/weather/prod/reference")
    summary = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#swagger-ui .opblock-summary")))
    check("/today" in summary.text, f"the operation is listed ({summary.text})")
    check("localhost" in driver.find_element(By.ID, "swagger-ui").text, "the gateway is the server")
    check(driver.title != "owned" and not driver.find_elements(By.CSS_SELECTOR, "#swagger-ui [onerror], #swagger-ui script"),
          "the description's markup is sanitised: no handler, no script")
    driver.find_element(By.CSS_SELECTOR, ".auth-wrapper button.authorize").click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".auth-container input"))).send_keys(key)
    driver.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.authorize").click()
    driver.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.btn-done").click()
    summary.click()
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button.try-out__btn"))).click()
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button.execute"))).click()
    status = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status")))
    eventually("Swagger UI shows the gateway's 200", lambda: status.text.strip().startswith("200"), 10)
    answer = driver.find_element(By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_description").text
    check("sunny" in answer, f"the mock's body is shown ({answer[:200]})")
    shot("portal-swagger-ui")
    # The description's planted <img onerror> reaches a detached element
    # inside Swagger UI before its sanitiser runs; the CSP blocks the
    # handler. That is the only violation the page may cause.
    problems = [p for p in csp_violations() if "inline event handler" not in p["message"]]
    check(not problems and driver.title != "owned", f"Swagger UI runs under the CSP ({problems})")

    step("the usage count moves")
    driver.get(f"{portal}/keys")
    used = int(driver.find_element(By.CSS_SELECTOR, "#keys td.used").text)
    check(used >= 2, f"at least the two calls are counted ({used})")
    call(key)
    driver.get(f"{portal}/keys")
    check(int(driver.find_element(By.CSS_SELECTOR, "#keys td.used").text) == used + 1, "one more call, one more counted")

    step("a form posted without the CSRF token is refused")
    key_id = driver.find_element(By.CSS_SELECTOR, "#keys td span.muted").text
    status, _ = post(f"{portal}/keys/{key_id}/revoke", {}, driver.get_cookies())
    check(status == 403, f"refused ({status})")

    step("a second consumer cannot revoke the first one's key")
    first_cookies = driver.get_cookies()
    driver.delete_all_cookies()
    sign_up("other@example.com", "another long password")
    approve("other@example.com")
    log_in("other@example.com", "another long password")
    wait.until(EC.presence_of_element_located((By.ID, "keys")))
    check("dev@example.com" not in driver.page_source, "the other consumer sees nothing of the first")
    csrf = driver.find_element(By.CSS_SELECTOR, "form.who input[name=csrf]").get_attribute("value")
    status, body = post(f"{portal}/keys/{key_id}/revoke", {"csrf": csrf}, driver.get_cookies())
    check(status == 404 and "has no key" in body, f"refused as not theirs ({status})")
    check(call(key) == 200, "the first consumer's key still works")

    step("the portal session opens no console session")
    status, _ = post(f"{console}/apis/weather/delete", {}, [c for c in first_cookies if c["name"].startswith("pylon_portal")])
    check(status == 303, f"the console sends a portal cookie to its login ({status})")
    check(call(key) == 200, "the API is still there")

    step("the developer rotates the key (the old one stops) and revokes the new one")
    driver.delete_all_cookies()
    log_in("dev@example.com", "correct horse battery staple")
    submit(wait.until(EC.presence_of_element_located((By.ID, f"rotate-{key_id}"))))
    new_key = wait.until(EC.presence_of_element_located((By.ID, "key-value"))).text.strip()
    check(new_key != key, "a new value")
    eventually("the rotated key works and the old one is refused", lambda: call(new_key) == 200 and call(key) == 403)
    new_id = driver.find_element(By.CSS_SELECTOR, "#keys td span.muted").text
    submit(driver.find_element(By.ID, f"revoke-{new_id}"))
    wait.until(EC.presence_of_element_located((By.ID, "keys")))
    check("No keys yet" in text_of("keys"), "no key left")
    eventually("the revoked key is refused", lambda: call(new_key) == 403)

    step("no page broke a CSP rule")
    problems = csp_violations()
    check(not problems, f"no CSP violations ({problems})")
    print("ok", flush=True)
except Exception as error:  # a wait that timed out, an element not found
    fail(f"{type(error).__name__}: {error}")
finally:
    driver.quit()
