"""Drives the operator console in a real headless Chromium (Selenium), the
way an operator would, against real `pylon control-plane` processes the
Rust test started. Prints one line per step; exits non-zero naming the
step that failed.

usage: console_e2e.py CONFIG_JSON
  {"consoles": [URL, URL], "operator_token": T, "reader_token": T,
   "nacking_node": NAME, "screenshots": DIR}
"""
import json
import os
import sys
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import check, csp_violations, post, shot, start, step, submit, text_of  # noqa: E402

config = json.loads(sys.argv[1])
console, other_console = config["consoles"][0], config["consoles"][1]
shots = config["screenshots"]

driver, wait = start(shots, "console", 10)


def login(token):
    driver.get(f"{console}/login")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    submit(driver.find_element(By.ID, "login"))


try:
    step("an unknown token is refused on the login page")
    driver.get(f"{console}/apis")
    check("/login" in driver.current_url, "an anonymous visit is sent to the login page")
    shot("login")
    login("not-a-token")
    check("unknown token" in text_of("error"), "the login page says the token is unknown")

    step("the operator logs in and sees the APIs")
    login(config["operator_token"])
    wait.until(EC.presence_of_element_located((By.ID, "apis")))
    check("alice (operator)" in text_of("user"), "the header names the operator")

    step("an API from YAML with a field error shows the error at its field")
    submit(driver.find_element(By.ID, "new-api"))
    definition = driver.find_element(By.ID, "definition")
    bad = (
        "api:\n  name: shop\n"
        "  description: '<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>'\n"
        "  routes:\n    - method: GET\n      path: no-slash\n"
        "      integration: {type: MOCK, mock: {statusCode: 200, body: v1}}\n"
    )
    definition.clear()
    definition.send_keys(bad)
    submit(driver.find_element(By.ID, "save"))
    errors = wait.until(EC.presence_of_element_located((By.ID, "errors")))
    fields = [e.get_attribute("data-field") for e in errors.find_elements(By.CSS_SELECTOR, ".field-error")]
    check("routes[0].path" in fields, f"the error names routes[0].path (got {fields})")
    shot("api-field-error")

    step("fixed, the API is created; its hostile description renders inert")
    definition = driver.find_element(By.ID, "definition")
    definition.clear()
    definition.send_keys(bad.replace("path: no-slash", "path: /items"))
    submit(driver.find_element(By.ID, "save"))
    wait.until(EC.presence_of_element_located((By.ID, "routes")))
    check("<script>window.__xss=2</script>" in text_of("description"), "the description is shown as text")
    check(driver.execute_script("return window.__xss === undefined"), "no script of the description ran")

    step("deploy v1 to prod, then v2 to staging")
    driver.find_element(By.ID, "deploy-stage").send_keys("prod")
    submit(driver.find_element(By.ID, "deploy"))
    first = wait.until(EC.presence_of_element_located((By.ID, "current"))).text
    driver.get(f"{console}/apis/shop/edit")
    definition = driver.find_element(By.ID, "definition")
    yaml = definition.get_attribute("value").replace("body: v1", "body: v2")
    definition.clear()
    definition.send_keys(yaml)
    submit(driver.find_element(By.ID, "save"))
    wait.until(EC.presence_of_element_located((By.ID, "deploy-stage"))).send_keys("staging")
    submit(driver.find_element(By.ID, "deploy"))
    second = wait.until(EC.presence_of_element_located((By.ID, "current"))).text
    check(first != second, "the second deployment is a new one")

    step("a 25 % canary of v2 on prod, then promoted")
    driver.get(f"{console}/apis/shop/stages/prod")
    Select(driver.find_element(By.ID, "canary-deployment")).select_by_value(second)
    percent = driver.find_element(By.ID, "percent")
    percent.clear()
    percent.send_keys("25")
    submit(driver.find_element(By.ID, "set-canary"))
    shown = wait.until(EC.presence_of_element_located((By.ID, "canary-percent"))).text
    check(float(shown) == 25, f"the canary takes 25 % (shown: {shown})")
    shot("stage-canary")
    submit(driver.find_element(By.ID, "promote"))
    check(wait.until(EC.presence_of_element_located((By.ID, "current"))).text == second, "prod serves v2 after the promotion")
    # As on AWS, promoting keeps the canary settings with no traffic.
    check(float(text_of("canary-percent")) == 0, "the promotion takes the canary's traffic to 0 %")

    step("roll back to v1, seeing the diff first")
    submit(driver.find_element(By.ID, f"rollback-{first}"))
    diff = wait.until(EC.presence_of_element_located((By.ID, "diff")))
    removed = [e.text for e in diff.find_elements(By.CSS_SELECTOR, ".del")]
    added = [e.text for e in diff.find_elements(By.CSS_SELECTOR, ".add")]
    check(any("v2" in line for line in removed) and any("v1" in line for line in added), f"the diff shows v2 going and v1 coming ({removed} / {added})")
    shot("rollback-diff")
    submit(driver.find_element(By.ID, "confirm-rollback"))
    check(wait.until(EC.presence_of_element_located((By.ID, "current"))).text == first, "prod serves v1 again")

    step("the stage's settings from YAML: a field error first, then a stage variable saved")
    submit(driver.find_element(By.ID, "edit-stage"))
    area = wait.until(EC.presence_of_element_located((By.ID, "definition")))
    settings = area.get_attribute("value")
    check("name: prod" in settings and "revision" not in settings, f"the stage as YAML, no server fields ({settings})")
    driver.execute_script("arguments[0].value = arguments[1]", area, settings + "  throttle: {rateLimit: -5, burstLimit: 10}\n")
    submit(driver.find_element(By.ID, "save"))
    errors = wait.until(EC.presence_of_element_located((By.ID, "errors"))).text
    check("throttle" in errors, f"the error names the throttle field ({errors})")
    area = driver.find_element(By.ID, "definition")
    driver.execute_script("arguments[0].value = arguments[1]", area, settings + "  variables: {color: blue}\n")
    submit(driver.find_element(By.ID, "save"))
    saved = wait.until(EC.presence_of_element_located((By.ID, "settings"))).text
    check("color: blue" in saved and text_of("current") == first, f"the variable is saved, the deployment kept ({saved})")

    step("a usage plan from YAML: a field error first, then created and edited to offer the stage")
    driver.get(f"{console}/usage-plans")
    submit(wait.until(EC.presence_of_element_located((By.ID, "new-plan"))))
    area = wait.until(EC.presence_of_element_located((By.ID, "definition")))
    driver.execute_script("arguments[0].value = arguments[1]", area, "usagePlan:\n  name: gold\n  quota: {limit: 10, period: FORTNIGHT}\n")
    submit(driver.find_element(By.ID, "save"))
    errors = wait.until(EC.presence_of_element_located((By.ID, "errors"))).text
    check("period" in errors.lower() or "FORTNIGHT" in errors, f"the error names the period ({errors})")
    area = driver.find_element(By.ID, "definition")
    driver.execute_script("arguments[0].value = arguments[1]", area, "usagePlan:\n  name: gold\n  quota: {limit: 10, period: DAY}\n")
    submit(driver.find_element(By.ID, "save"))
    submit(wait.until(EC.presence_of_element_located((By.ID, "edit-plan-gold"))))
    area = wait.until(EC.presence_of_element_located((By.ID, "definition")))
    driver.execute_script("arguments[0].value = arguments[1]", area, area.get_attribute("value") + "  apiStages: [{api: shop, stage: prod}]\n")
    submit(driver.find_element(By.ID, "save"))
    plan = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "section.plan"))).text
    check("gold" in plan and "shop/prod" in driver.find_element(By.TAG_NAME, "main").text, "the plan offers shop/prod")

    step("the NACKing data plane's error is on the data planes page")
    driver.get(f"{console}/nodes")
    nodes = wait.until(EC.presence_of_element_located((By.ID, "nodes")))
    row = [r for r in nodes.find_elements(By.CSS_SELECTOR, "tbody tr") if config["nacking_node"] in r.text]
    check(row and "NACK" in row[0].text and "pin" in row[0].text.lower(), f"the node, NACK and its reason are shown ({[r.text for r in row]})")
    shot("nodes")

    step("the session is valid on another control-plane node")
    driver.get(f"{other_console}/apis")
    check("alice (operator)" in text_of("user"), "the other node's console knows the session")

    step("the stage page charts the traffic the data planes reported, merged across nodes")
    driver.get(f"{other_console}/apis/traffic/stages/prod")
    check(text_of("traffic-requests") == "25", f"25 requests in the last hour (shown: {text_of('traffic-requests')})")
    rows = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#top-routes tbody tr")]
    check(rows and rows[0].startswith("GET /items 20"), f"GET /items leads the routes ({rows})")
    check(any(r.startswith("(no route matched) 5 5") for r in rows), f"the unmatched requests are a row of 4xx ({rows})")
    check(len(driver.find_elements(By.CSS_SELECTOR, "svg polyline")) == 9, "three charts with their lines (latency with the integration's)")
    shot("stage-traffic")

    step("a form posted without its CSRF token is refused")
    cookies = driver.get_cookies()
    status, _ = post(f"{console}/apis/shop/delete", {"revision": "0"}, cookies)
    check(status == 403, f"a CSRF-less post is refused (got {status})")
    driver.get(f"{console}/apis/shop")
    check(driver.find_elements(By.ID, "routes"), "the API is still there")
    driver.get(f"{console}/audit")
    shot("audit")

    step("a form from another origin is refused, even a login")
    status, _ = post(f"{console}/login", {"token": config["reader_token"]}, [], origin="http://evil.example")
    check(status == 403, f"a cross-site login is refused ({status})")

    step("after logout the old session cookie opens nothing, on any node")
    before = driver.get_cookies()
    submit(driver.find_element(By.CSS_SELECTOR, "form.who button"))
    wait.until(EC.presence_of_element_located((By.ID, "token")))
    csrf_gone = before  # the cookies of the ended session
    status, _ = post(f"{other_console}/apis/shop/deploy", {"stage": "prod"}, csrf_gone)
    check(status == 303, f"the ended session is sent to log in ({status})")

    step("a reader sees no write controls and is refused when posting anyway")
    login(config["reader_token"])
    wait.until(EC.presence_of_element_located((By.ID, "apis")))
    check("ci (reader)" in text_of("user"), "the header names the reader")
    check(not driver.find_elements(By.ID, "new-api"), "no New API for a reader")
    driver.get(f"{console}/apis/shop")
    check(not driver.find_elements(By.ID, "deploy") and not driver.find_elements(By.ID, "edit-api"), "no deploy or edit for a reader")
    driver.get(f"{console}/apis/shop/stages/prod")
    check(not driver.find_elements(By.ID, "set-canary") and not driver.find_elements(By.ID, "edit-stage"), "no canary or settings control for a reader")
    check("color: blue" in text_of("settings"), "a reader sees the settings")
    driver.get(f"{console}/usage-plans")
    check("gold" in driver.find_element(By.TAG_NAME, "main").text, "a reader sees the plans")
    check(not driver.find_elements(By.ID, "new-plan") and not driver.find_elements(By.ID, "edit-plan-gold"), "no plan controls for a reader")
    driver.get(f"{console}/apis/shop/stages/prod")
    csrf = driver.find_element(By.CSS_SELECTOR, "form.who input[name=csrf]").get_attribute("value")
    status, body = post(
        f"{console}/apis/shop/stages/prod/rollback/{second}",
        {"csrf": csrf, "revision": "0"},
        driver.get_cookies(),
    )
    check(status == 403 and "may not call" in body, f"the reader's post is refused by the admin API's role check (got {status})")
    status, body = post(
        f"{console}/apis/shop/stages/prod/edit",
        {"csrf": csrf, "revision": "0", "definition": "stage: {api: shop, name: prod, variables: {color: red}}"},
        driver.get_cookies(),
    )
    check(status == 403, f"the reader's settings are refused ({status})")
    # Refused before any work: a deeply nested document costs a reader nothing.
    started = time.time()
    status, _ = post(
        f"{console}/apis/new",
        {"csrf": csrf, "revision": "0", "definition": "api:\n  d: " + "[" * 200000},
        driver.get_cookies(),
    )
    check(status == 403 and time.time() - started < 3, f"the reader's document is refused at once ({status})")
    driver.get(f"{console}/apis/shop/stages/prod")
    check(text_of("current") == first, "the reader changed nothing")

    step("the page loaded no script and broke no CSP rule")
    problems = csp_violations()
    check(not problems, f"no CSP violations ({problems})")
    print("ok", flush=True)
except Exception as error:  # a wait that timed out, an element not found
    fail(f"{type(error).__name__}: {error}")
finally:
    driver.quit()
